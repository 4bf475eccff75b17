-- Distinct identities (name keys + date of birth) of the same group (a strong cluster, or
-- a merged cluster) that are one biographic identity written differently: a typo, a
-- swapped day and month, a blank date of birth. Connected components of these pairs
-- (Python) are the identity groups; several groups in one person's cluster are aliases.
-- Alias names are drawn independently, so they fail the name test; alias dates of birth
-- differ by months or years, so they fail the date test.
-- Inputs: cid_multi (cid, grp, h): the distinct identities of groups holding several;
-- identities (h, family_key, given_key, birth_date).
with c as (
    select m.cid, m.grp, i.family_key, i.given_key, i.birth_date
    from cid_multi m
    join identities i using (h)
)
select a.cid as a, b.cid as b
from c a
join c b on a.grp = b.grp and a.cid < b.cid
where (a.family_key is null or b.family_key is null
       or jaro_winkler_similarity(a.family_key, b.family_key) >= 0.85)
  and (a.given_key is null or b.given_key is null
       or jaro_winkler_similarity(a.given_key, b.given_key) >= 0.85)
  and (a.birth_date is null or b.birth_date is null
       or a.birth_date = b.birth_date
       or (day(b.birth_date) <= 12
           and a.birth_date = make_date(year(b.birth_date), day(b.birth_date), month(b.birth_date)))
       or damerau_levenshtein(strftime(a.birth_date, '%Y%m%d'), strftime(b.birth_date, '%Y%m%d')) <= 1)
