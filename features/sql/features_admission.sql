-- Admission-only family: what the admission record and the lead alone say. A baseline model
-- uses these alone; the value of linking the other 26 systems is measured against it.
select
    case_id,
    case when admit_class = 'B1' then 1 else 0 end as admit_class_b1,
    case when admit_class = 'B2' then 1 else 0 end as admit_class_b2,
    case when admit_class = 'F1' then 1 else 0 end as admit_class_f1,
    case when admit_class = 'H1B' then 1 else 0 end as admit_class_h1b,
    case when admit_class = 'J1' then 1 else 0 end as admit_class_j1,
    case when admit_class = 'WT' then 1 else 0 end as admit_class_wt,
    date_diff('day', admit_date, admit_until) as stay_days,
    date_diff('day', admit_until, scoring_date) as days_overstayed,
    date_diff('day', lead_date, scoring_date) as lead_age_days,
    date_diff('day', admit_until, lead_date) as lead_lag_days,
    month(admit_date) as admit_month,
    case when admission_record_id is null then 1 else 0 end as admission_missing
from features_cases
