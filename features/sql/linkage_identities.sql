-- Biographic identities within groups of records (strong clusters, then merged clusters):
-- distinct (name keys, date of birth) per group, and the pairs of them that are one
-- identity written differently (a typo, a swapped day and month, a missing date of
-- birth). Connected components of these pairs (Python) give the identity groups; several
-- groups in one person cluster are aliases. Alias names are drawn independently, so they
-- fail the name test; alias dates of birth differ by months or years, so they fail the
-- date test.
-- Inputs: link_records (ordered by rec_idx) and identity_grp (grp per rec_idx, -1: skip),
-- row-aligned for a positional join. Identities are keyed by a hash of group and identity.

-- name: identity_records
select r.rec_idx, hash(g.grp, r.family_key, r.given_key, r.birth_date) as h
from link_records r positional join identity_grp g
where g.grp >= 0 and (r.family_key is not null or r.given_key is not null);

-- name: identities
select row_number() over () - 1 as ident_no, *
from (
    select
        hash(g.grp, r.family_key, r.given_key, r.birth_date) as h,
        any_value(g.grp) as grp,
        any_value(r.family_key) as family_key,
        any_value(r.given_key) as given_key,
        any_value(r.birth_date) as birth_date
    from link_records r positional join identity_grp g
    where g.grp >= 0 and (r.family_key is not null or r.given_key is not null)
    group by 1
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

-- name: record_identity
select r.rec_idx, i.ident_no
from identity_records r
join identities i using (h);
