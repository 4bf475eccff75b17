-- Name normalisers as DuckDB macros: the SQL twins of features/normalize.py, used in bulk
-- by ingestion (a Hypothesis test checks that both give the same answers). Inputs must be
-- ASCII already: ingestion sends the rare non-ASCII value through unidecode first.

-- Display form: upper case, apostrophes dropped, other non-letters as spaces, one space.
create or replace macro clean_name_ascii(s) as
    nullif(trim(regexp_replace(regexp_replace(upper(replace(s, '''', '')), '[^A-Z ]+', ' ', 'g'), ' +', ' ', 'g')), '');

-- One pass of normalize.FOLD_RULES, in order.
create or replace macro fold_rules(k) as
    regexp_replace(replace(replace(replace(replace(replace(replace(replace(
        regexp_replace(replace(replace(replace(replace(replace(k,
            'x', 'ks'), 'z', 's'), 'c', 'k'), 'q', 'k'), 'ph', 'f'),
        '[sk]+h', '', 'g'),
        'h', ''), 'y', 'i'), 'ee', 'i'), 'ie', 'i'), 'oo', 'u'), 'ou', 'u'), 'w', 'v'), 'd+j', 'j', 'g');

-- Comparison key of a cleaned name. Python folds to a fixed point; two passes reach it
-- for any name-like string (one pass almost always does; a Hypothesis test compares).
-- A name made only of letters the folding drops ("Zhzh") keys to one "h" per h it has
-- (see name_key: the variant rules keep that count, not the plain spelling).
create or replace macro name_key_clean(c) as
    coalesce(nullif(fold_rules(fold_rules(lower(replace(c, ' ', '')))), ''),
             nullif(repeat('h', length(c) - length(replace(upper(c), 'H', ''))), ''));

-- A one-field name split into family and given names: "FAMILY, Given" or "Given Family".
create or replace macro split_family(s) as
    case when contains(s, ',') then clean_name_ascii(split_part(s, ',', 1))
         else regexp_extract(clean_name_ascii(s), '([A-Z]+)$') end;

create or replace macro split_given(s) as
    case when contains(s, ',') then clean_name_ascii(substr(s, strpos(s, ',') + 1))
         else nullif(regexp_replace(coalesce(clean_name_ascii(s), ''), ' ?[A-Z]+$', ''), '') end;
