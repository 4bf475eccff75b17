-- Display forms and comparison keys of distinct raw names. Input: name_raw (raw, a), where
-- a is the ASCII form of raw.

-- name: single
-- A column that holds one name (a family name, or given names).
select raw, name as family_name, name as given_name, key as family_key, key as given_key
from (
    select raw, name, name_key_clean(name) as key
    from (select raw, clean_name_ascii(a) as name from name_raw)
);

-- name: full
-- A one-field name, "FAMILY, Given" or "Given Family", split in two.
select raw, family_name, given_name,
       name_key_clean(family_name) as family_key,
       name_key_clean(given_name) as given_key
from (select raw, split_family(a) as family_name, split_given(a) as given_name from name_raw);
