-- Screening and travel: watchlist hits (most are false: weight them by match score), border
-- lookouts, visa refusals and one-way travel (a refusal with one-way travel says more than
-- either alone). Each family reads every system of its event kind (ev_<kind>).
with watch as (
    select
        c.case_id, count(*) as watchlist_hits, max(r.match_score) as watchlist_max_score,
        sum(case when r.match_score > 0.9 then 1 else 0 end) as watchlist_hits_above_90
    from features_cases c
    join ev_watchlist_hit r on r.cluster_id = c.cluster_id and r.event_date <= c.scoring_date
    group by c.case_id
),
lookouts as (
    select
        c.case_id, count(*) as lookouts,
        sum(case when r.secondary_inspection then 1 else 0 end) as secondary_inspections,
        sum(case when r.lookout_type = 'intel' then 1 else 0 end) as intel_lookouts
    from features_cases c
    join ev_lookout r on r.cluster_id = c.cluster_id and r.event_date <= c.scoring_date
    group by c.case_id
),
refusals as (
    select
        c.case_id, count(*) as visa_refusals,
        sum(case when r.refusal_ground = '212(a)(6)(C)' then 1 else 0 end) as refusals_misrepresentation
    from features_cases c
    join ev_visa_refusal r on r.cluster_id = c.cluster_id and r.event_date <= c.scoring_date
    group by c.case_id
),
bookings as (
    select
        c.case_id, count(*) as bookings,
        sum(case when r.one_way then 1 else 0 end) as one_way_bookings,
        sum(case when not r.flown and r.travel_date <= c.scoring_date then 1 else 0 end)
            as booked_not_flown
    from features_cases c
    join ev_booking r on r.cluster_id = c.cluster_id and r.event_date <= c.scoring_date
    group by c.case_id
)
select
    c.case_id, w.watchlist_hits, w.watchlist_max_score, w.watchlist_hits_above_90,
    l.lookouts, l.secondary_inspections, l.intel_lookouts,
    f.visa_refusals, f.refusals_misrepresentation,
    b.bookings, b.one_way_bookings, b.booked_not_flown,
    case when coalesce(f.visa_refusals, 0) > 0 and coalesce(b.one_way_bookings, 0) > 0
         then 1 else 0 end as one_way_after_refusal
from features_cases c
left join watch w on w.case_id = c.case_id
left join lookouts l on l.case_id = c.case_id
left join refusals f on f.case_id = c.case_id
left join bookings b on b.case_id = c.case_id
