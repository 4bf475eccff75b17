-- Inputs of the probabilistic linker, built after the strong-key step and the identity
-- grouping. Inputs: link_records, strong_links (rec_idx -> strong_id), record_identity
-- (rec_idx -> ident_group), country_regions (country -> region).

-- name: rec_attrs
-- Per named record: its strong cluster, identity group and the attributes compared.
select
    r.rec_idx,
    s.strong_id as comp_id,
    i.ident_group,
    r.family_key,
    r.given_key,
    r.birth_date,
    c.region,
    -- A tip gives an approximate age at the tip's date: an approximate year of birth.
    case when r.approx_age is not null then year(r.event_date) - r.approx_age end as approx_birth_year,
    case when r.doc_last4 is not null then [r.doc_last4]
         when r.passport is not null then [right(r.passport, 4)] end as last4
from link_records r
join strong_links s using (rec_idx)
join record_identity i using (rec_idx)
left join country_regions c on c.country = r.country;

-- name: link_reps
-- One representative per identity group: its most frequent spelling and date of birth,
-- with the group's region, approximate birth year and the last four characters of every
-- travel document of its strong cluster.
with spellings as (
    select ident_group, family_key, given_key, birth_date, count(*) as n
    from rec_attrs
    group by all
),
modal as (
    select
        *,
        row_number() over (
            partition by ident_group
            order by n desc, birth_date is null, family_key, given_key, birth_date
        ) as rk
    from spellings
),
grp as (
    select
        ident_group,
        min(comp_id) as comp_id,
        min(region) as region,
        median(approx_birth_year)::INTEGER as approx_birth_year,
        count(*) as n_records
    from rec_attrs
    group by 1
),
docs as (
    select s.strong_id as comp_id, list(distinct coalesce(r.doc_last4, right(r.passport, 4))) as last4
    from link_records r
    join strong_links s using (rec_idx)
    where r.doc_last4 is not null or r.passport is not null
    group by 1
)
select
    g.ident_group as rep_id,
    g.comp_id,
    m.family_key,
    m.given_key,
    m.birth_date,
    case when day(m.birth_date) <= 12
         then make_date(year(m.birth_date), day(m.birth_date), month(m.birth_date)) end
        as birth_date_swapped,
    coalesce(year(m.birth_date), g.approx_birth_year) as birth_year,
    g.region,
    d.last4,
    g.n_records
from grp g
join modal m on m.ident_group = g.ident_group and m.rk = 1
left join docs d on d.comp_id = g.comp_id;

-- name: link_training
-- Record-level pairs inside strong clusters are known matches: the m values are
-- estimated from them (a sample of clusters, chosen by a hash so runs repeat). The label
-- is the identity group, not the cluster: a FIN shared by two biographic identities
-- proves one person, but a pair of the alias's records says nothing about how one
-- identity's spellings vary, and would teach the model that a wholly different name
-- is common among matches.
select
    a.rec_idx as rep_id,
    a.comp_id,
    a.ident_group,
    a.family_key,
    a.given_key,
    a.birth_date,
    case when day(a.birth_date) <= 12
         then make_date(year(a.birth_date), day(a.birth_date), month(a.birth_date)) end
        as birth_date_swapped,
    coalesce(year(a.birth_date), a.approx_birth_year) as birth_year,
    a.region,
    a.last4
from rec_attrs a
where a.comp_id in (
    select comp_id from rec_attrs
    group by 1
    having count(*) >= 2
    order by hash(comp_id)
    limit $max_clusters
);
