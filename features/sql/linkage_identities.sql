-- Distinct identities (name keys + date of birth) within each group of records, and the
-- pairs of them that are the same identity written differently (a typo, a swapped day and
-- month, a missing date of birth). Connected components of these pairs (Python) give the
-- identity groups: one per biographic identity a person uses, so several groups in one
-- person cluster are aliases. Alias names are drawn independently, so they fail the name
-- test; alias dates of birth differ by months or years, so they fail the date test.
-- Input: identity_input (grp, rec_idx, family_key, given_key, birth_date).

-- name: identities
select
    row_number() over () - 1 as ident_no,  -- any numbering: groups are named by rec_idx
    grp, family_key, given_key, birth_date, n
from (
    select grp, family_key, given_key, birth_date, count(*) as n
    from identity_input
    where family_key is not null or given_key is not null
    group by all
);

-- name: identity_pairs
select a.ident_no as a, b.ident_no as b
from identities a
join identities b on a.grp = b.grp and a.ident_no < b.ident_no
where (a.family_key is null or b.family_key is null
       or jaro_winkler_similarity(a.family_key, b.family_key) >= 0.85)
  and (a.given_key is null or b.given_key is null
       or jaro_winkler_similarity(a.given_key, b.given_key) >= 0.85)
  and (a.birth_date is null or b.birth_date is null
       or a.birth_date = b.birth_date
       or (day(b.birth_date) <= 12
           and a.birth_date = make_date(year(b.birth_date), day(b.birth_date), month(b.birth_date)))
       or damerau_levenshtein(strftime(a.birth_date, '%Y%m%d'), strftime(b.birth_date, '%Y%m%d')) <= 1);
