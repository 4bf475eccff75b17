-- Rows the probabilistic linker compares. Inputs: identities (h -> family_key, given_key,
-- birth_date) and frames built in Python from per-record arrays: rep_frame (one row per
-- identity group of a strong cluster, with the hash of its most frequent spelling) and
-- training_frame (the named records of a sample of strong clusters).

-- name: link_reps
-- One representative per identity group, with its cluster's travel documents (the hashes
-- of their last four characters: up to two, the smallest and the largest).
select
    f.rep_id,
    f.comp_id,
    i.family_key,
    i.given_key,
    i.birth_date,
    case when day(i.birth_date) <= 12
         then make_date(year(i.birth_date), day(i.birth_date), month(i.birth_date)) end
        as birth_date_swapped,
    coalesce(year(i.birth_date), f.approx_birth_year) as birth_year,
    f.region,
    f.doc_a,
    f.doc_b,
    f.n_records
from rep_frame f
join identities i using (h);

-- name: link_training
-- Record-level pairs inside strong clusters are known matches: the m values are
-- estimated from them. The label is the identity group, not the cluster: a FIN shared
-- by two biographic identities proves one person, but a pair of the alias's records
-- says nothing about how one identity's spellings vary, and would teach the model that
-- a wholly different name is common among matches.
select
    f.rep_id,
    f.comp_id,
    f.ident_group,
    i.family_key,
    i.given_key,
    i.birth_date,
    case when day(i.birth_date) <= 12
         then make_date(year(i.birth_date), day(i.birth_date), month(i.birth_date)) end
        as birth_date_swapped,
    coalesce(year(i.birth_date), f.approx_birth_year) as birth_year,
    f.region,
    f.doc_a,
    f.doc_b
from training_frame f
join identities i using (h);
