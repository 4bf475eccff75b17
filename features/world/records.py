"""How each of the 27 source systems observes the people of a chunk.

Every function returns one system's raw rows for the chunk as a dict of column
arrays plus ``_person`` (the truth: whose record it is). Names and dates here are
still clean; ``generate.py`` applies the faults and the system's own formats.
Each system keys its records on its own identifiers, as in DESIGN.md.
"""

from __future__ import annotations

import numpy as np

from features.world.people import DAY, VISA_CLASSES, Chunk, _dates, fmt_ids

__all__ = ["SYSTEM_BUILDERS", "trips"]

Cols = dict[str, np.ndarray]
NAT = np.datetime64("NaT")


def _rep(c: Chunk, idx: np.ndarray, **extra: np.ndarray) -> Cols:
    """Base columns of records belonging to chunk positions ``idx``."""
    out: Cols = {"_person": c["person_id"][idx]}
    out.update(extra)
    return out


def _identity(
    c: Chunk, idx: np.ndarray, rng: np.random.Generator, p_alias: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Names and birth date as a record shows them: an alias for some records of alias users."""
    use = (c["aliases"][idx] > 0) & (rng.random(idx.size) < p_alias)
    given = np.where(use, c["alias_given"][idx], c["given"][idx])
    family = np.where(use, c["alias_family"][idx], c["family"][idx])
    birth = np.where(use, c["alias_birth"][idx], c["birth"][idx])
    return given, family, birth


def _passport_at(c: Chunk, idx: np.ndarray, when: np.ndarray) -> np.ndarray:
    """The passport a person holds on a date (renewal changes the number)."""
    renewed = c["renewed"][idx] & (when >= c["renewal_date"][idx])
    return np.where(renewed, c["passport2"][idx], c["passport1"][idx])


def _repeat(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(counts.size), counts)


def trips(c: Chunk, rng: np.random.Generator) -> Cols:
    """All trips: the case trip (k=0) plus earlier, compliant trips (k>=1)."""
    n_prev = c["n_prev"]
    idx_prev = _repeat(n_prev)
    k = np.concatenate([np.arange(m) for m in n_prev]) + 1 if idx_prev.size else np.zeros(0, int)
    prev_admit = c["admit"][idx_prev] - (k * 420 + rng.integers(0, 300, idx_prev.size)) * DAY
    prev_stay = rng.integers(20, 120, idx_prev.size) * DAY
    idx0 = np.arange(len(c))
    return {
        "idx": np.concatenate([idx0, idx_prev]),
        "k": np.concatenate([np.zeros(len(c), int), k]),
        "admit": np.concatenate([c["admit"], prev_admit]),
        "admit_until": np.concatenate([c["admit_until"], prev_admit + prev_stay + 60 * DAY]),
        "left": np.concatenate(
            [np.full(len(c), NAT, dtype="datetime64[D]"), prev_admit + prev_stay]
        ),
        "vclass": np.concatenate([c["vclass"], rng.choice(len(VISA_CLASSES), size=idx_prev.size)]),
    }


def consular_visas(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    sel = VISA_CLASSES[t["vclass"]] != "WT"  # visa-waiver travellers hold no visa
    idx, admit = t["idx"][sel], t["admit"][sel]
    issue = admit - rng.integers(20, 300, idx.size) * DAY
    return _rep(
        c,
        idx,
        visa_foil=np.char.add(
            "V", (np.arange(idx.size) + rng.integers(1e8, 9e8)).astype(str)
        ).astype(object),
        passport_no=_passport_at(c, idx, issue),
        surname=c["family"][idx],
        given_names=c["given"][idx],
        dob=c["birth"][idx],
        nationality=c["region"][idx],
        sex=np.where(c["male"][idx], "M", "F").astype(object),
        issue_date=issue,
        visa_class=VISA_CLASSES[t["vclass"][sel]],
    )


def visa_refusals(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    idx = _repeat(c["refusals"])
    when = _dates(rng, c["admit"][idx] - 6 * 365 * DAY, c["admit"][idx] - 30 * DAY, idx.size)
    grounds = np.array(["214(b)", "212(a)(6)(C)", "221(g)", "212(a)(9)(B)"], dtype=object)
    return _rep(
        c,
        idx,
        family=c["family"][idx],
        given=c["given"][idx],
        birth=c["birth"][idx],
        citizenship=c["region"][idx],
        refusal_date=when,
        refusal_ground=grounds[rng.choice(4, idx.size, p=[0.7, 0.1, 0.15, 0.05])],
    )


def arrival_manifests(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    idx, admit = t["idx"], t["admit"]
    return _rep(
        c,
        idx,
        doc_number=_passport_at(c, idx, admit),
        last_name=c["family"][idx],
        first_name=c["given"][idx],
        birth_dt=c["birth"][idx],
        arrival_date=admit,
        carrier=np.array(["AA", "UA", "DL", "BA", "LH", "AF", "EK", "CM"], dtype=object)[
            rng.integers(0, 8, idx.size)
        ],
    )


def admissions(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    idx = t["idx"]
    i94 = (c["i94"][idx].astype(np.int64) + t["k"]).astype(str).astype(object)
    return _rep(
        c,
        idx,
        i94_number=i94,
        passport_number=_passport_at(c, idx, t["admit"]),
        family_name=c["family"][idx],
        given_name=c["given"][idx],
        birth_date=c["birth"][idx],
        admit_date=t["admit"],
        admit_class=VISA_CLASSES[t["vclass"]],
        admit_until=t["admit_until"],
    )


def departure_manifests(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    # Earlier compliant trips, departed case trips flown out, and false departures
    # (booked, checked in, not flown) for a few in-country overstays.
    prev = t["k"] > 0
    dep = c["dep_mode"] == "air_unmatched"
    false_dep = (c["status"] == 0) & (rng.random(len(c)) < 0.03)
    false_date = _dates(rng, c["admit_until"], c["scoring"] - 10 * DAY, len(c))
    idx = np.concatenate([t["idx"][prev], np.flatnonzero(dep), np.flatnonzero(false_dep)])
    when = np.concatenate([t["left"][prev], c["departure"][dep], false_date[false_dep]])
    return _rep(
        c,
        idx,
        passport=_passport_at(c, idx, when),
        lname=c["family"][idx],
        fname=c["given"][idx],
        dob=c["birth"][idx],
        departure_date=when,
        flight=np.char.add("FL", rng.integers(100, 9999, idx.size).astype(str)).astype(object),
    )


def land_exits(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    idx = np.flatnonzero(c["dep_mode"] == "land_recorded")
    pp = _passport_at(c, idx, c["departure"][idx])
    last4 = np.array([p[-4:] for p in pp], dtype=object)
    return _rep(
        c,
        idx,
        full_name=np.char.add(
            np.char.add(c["given"][idx].astype(str), " "), c["family"][idx].astype(str)
        ).astype(object),
        birth_date=c["birth"][idx],
        doc_last4=last4,
        exit_date=c["departure"][idx],
        port=np.array(
            ["San Ysidro", "Laredo", "El Paso", "Nogales", "Blaine", "Detroit"], dtype=object
        )[rng.integers(0, 6, idx.size)],
    )


def partner_entries(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    idx = np.flatnonzero(c["dep_mode"] == "partner_entry")
    when = c["departure"][idx] + rng.integers(0, 2, idx.size) * DAY
    return _rep(
        c,
        idx,
        passport_no=_passport_at(c, idx, when),
        surname=c["family"][idx],
        forenames=c["given"][idx],
        dob=c["birth"][idx],
        entry_date=when,
        partner_country=np.array(["CAN", "MEX"], dtype=object)[rng.integers(0, 2, idx.size)],
    )


def biometric_enrollments(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    sel = c["has_fin"][t["idx"]]
    idx, when = t["idx"][sel], t["admit"][sel]
    # Alias users also enrolled under other biographic identities on the same FIN.
    ai = _repeat(c["aliases"] * c["has_fin"])
    a_when = _dates(rng, c["admit"][ai] - 4 * 365 * DAY, c["presence_end"][ai], ai.size)
    all_idx = np.concatenate([idx, ai])
    given = np.concatenate([c["given"][idx], c["alias_given"][ai]])
    family = np.concatenate([c["family"][idx], c["alias_family"][ai]])
    birth = np.concatenate([c["birth"][idx], c["alias_birth"][ai]])
    doc = np.concatenate([_passport_at(c, idx, when), np.full(ai.size, None, dtype=object)])
    return _rep(
        c,
        all_idx,
        fin=c["fin"][all_idx],
        surname=family,
        given=given,
        dob=birth,
        enroll_date=np.concatenate([when, a_when]),
        doc_number=doc,
    )


def biometric_exits(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    idx = np.flatnonzero((c["dep_mode"] == "biometric_exit") & c["has_fin"])
    return _rep(
        c,
        idx,
        fin=c["fin"][idx],
        exit_date=c["departure"][idx],
        port=np.array(["JFK", "ATL", "IAH", "LAX", "ORD"], dtype=object)[
            rng.integers(0, 5, idx.size)
        ],
    )


def student_records(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    student = (VISA_CLASSES[c["vclass"]] == "F1") | (c["lawful_kind"] == "student")
    idx = np.flatnonzero(student)
    lawful = c["lawful_kind"][idx] == "student"
    # Initial record at admission; lawful students show an active event and a future end date;
    # others completed or were terminated around their admit-until date.
    end = np.where(
        lawful, c["scoring"][idx] + rng.integers(60, 700, idx.size) * DAY, c["admit_until"][idx]
    )
    ev_date = np.where(
        lawful,
        _dates(rng, c["admit_until"][idx] - 60 * DAY, c["scoring"][idx] - 1 * DAY, idx.size),
        c["admit_until"][idx] - rng.integers(0, 60, idx.size) * DAY,
    )
    ev_type = np.where(
        lawful, "active", np.where(rng.random(idx.size) < 0.6, "completed", "terminated")
    ).astype(object)
    all_idx = np.concatenate([idx, idx])
    return _rep(
        c,
        all_idx,
        sevis_id=c["sevis"][all_idx],
        last_name=c["family"][all_idx],
        first_name=c["given"][all_idx],
        birth_date=c["birth"][all_idx],
        event_date=np.concatenate([c["admit"][idx], ev_date]),
        event_type=np.concatenate([np.full(idx.size, "initial", dtype=object), ev_type]),
        program_end_date=np.concatenate([end, end]),
        passport=np.concatenate(
            [_passport_at(c, idx, c["admit"][idx]), np.full(idx.size, None, dtype=object)]
        ),
    )


def _benefits(c: Chunk, rng: np.random.Generator) -> Cols:
    """Applications: lawful extensions/changes (filed in time) and late or denied filings."""
    lawful = np.isin(c["lawful_kind"], ["extension", "change_of_status"])
    late = (c["status"] == 0) & (
        rng.random(len(c)) < 0.10
    )  # filed after admit-until: confers nothing
    asy = c["asylum"]
    idx = np.concatenate([np.flatnonzero(lawful), np.flatnonzero(late), np.flatnonzero(asy)])
    kind = np.concatenate(
        [
            c["lawful_kind"][lawful],
            np.full(late.sum(), "late", dtype=object),
            np.full(asy.sum(), "asylum_ead", dtype=object),
        ]
    )
    filed = np.where(
        kind == "late",
        _dates(rng, c["admit_until"][idx] + 10 * DAY, c["scoring"][idx] - 5 * DAY, idx.size),
        _dates(rng, c["admit_until"][idx] - 120 * DAY, c["admit_until"][idx] - 5 * DAY, idx.size),
    )
    code = np.select([kind == "late", kind == "asylum_ead"], [1, 2], 0)
    receipt = fmt_ids("EAC", c["person_id"][idx] * 3 + code, 10)
    form = np.select(
        [kind == "extension", kind == "change_of_status", kind == "asylum_ead"],
        ["I-539", "I-129", "I-765"],
        "I-539",
    ).astype(object)
    return {"idx": idx, "kind": kind, "filed": filed, "form": form, "receipt": receipt}


def benefit_applications(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    b = t["benefits"]
    idx = b["idx"]
    return _rep(
        c,
        idx,
        receipt_number=b["receipt"],
        a_number=c["a_number"][idx],
        family_name=c["family"][idx],
        given_name=c["given"][idx],
        date_of_birth=c["birth"][idx],
        form_type=b["form"],
        filed_date=b["filed"],
        i94_number=c["i94"][idx],
    )


def benefit_decisions(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    b = t["benefits"]
    # Changes of status are approved; extensions are pending (no decision) or approved;
    # late filings are denied; decisions come 2-10 months after filing.
    decided = np.where(b["kind"] == "extension", rng.random(b["idx"].size) < 0.4, True)
    when = b["filed"] + rng.integers(60, 300, b["idx"].size) * DAY
    decided &= when <= c["scoring"][b["idx"]]
    decided |= (
        b["kind"] == "late"
    )  # denials may post after scoring; they are dated after the filing
    decision = np.where(b["kind"] == "late", "denied", "approved").astype(object)
    sel = np.flatnonzero(decided)
    idx = b["idx"][sel]
    return _rep(
        c,
        idx,
        receipt=b["receipt"][sel],
        a_number=c["a_number"][idx],
        decision=decision[sel],
        decision_date=when[sel],
    )


def asylum_filings(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    idx = np.flatnonzero(c["asylum"])
    return _rep(
        c,
        idx,
        a_number=c["a_number"][idx],
        applicant_surname=c["family"][idx],
        applicant_given=c["given"][idx],
        applicant_dob=c["birth"][idx],
        filed_date=_dates(
            rng, c["admit_until"][idx] - 200 * DAY, c["scoring"][idx] - 30 * DAY, idx.size
        ),
        case_status=np.array(["pending", "referred", "denied"], dtype=object)[
            rng.choice(3, idx.size, p=[0.6, 0.3, 0.1])
        ],
    )


def work_authorizations(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    idx = np.flatnonzero(c["asylum"] | (c["lawful_kind"] == "change_of_status"))
    start = _dates(rng, c["admit_until"][idx] - 100 * DAY, c["scoring"][idx] - 10 * DAY, idx.size)
    return _rep(
        c,
        idx,
        a_number=c["a_number"][idx],
        card_number=np.char.add("EAD", c["a_number"][idx].astype(str)).astype(object),
        valid_from=start,
        valid_to=start + 365 * DAY,
        category=np.where(c["asylum"][idx], "C08", "C09").astype(object),
    )


def employment_checks(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    n_checks = np.where(c["works"], 1 + rng.poisson(1.2, len(c)), 0)
    idx = _repeat(n_checks)
    when = _dates(rng, c["admit_until"][idx] + 15 * DAY, c["presence_end"][idx], idx.size)
    has_a = rng.random(idx.size) < 0.4
    result = np.where(
        (c["status"][idx] == 0) & (rng.random(idx.size) < 0.5),
        "tentative_nonconfirmation",
        "authorized",
    ).astype(object)
    return _rep(
        c,
        idx,
        employee_last=c["family"][idx],
        employee_first=c["given"][idx],
        employee_dob=c["birth"][idx],
        a_number=np.where(has_a, c["a_number"][idx], None),
        i94_number=np.where(has_a, None, c["i94"][idx]),
        query_date=when,
        result=result,
    )


def _encounters(c: Chunk, rng: np.random.Generator) -> Cols:
    idx = _repeat(c["encounters"])
    when = _dates(rng, c["admit_until"][idx], c["presence_end"][idx], idx.size)
    arrest = rng.random(idx.size) < 0.35 + 0.2 * (c["z"][idx] > 1)
    return {"idx": idx, "when": when, "arrest": arrest}


def enforcement_encounters(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    e = t["encounters"]
    idx = e["idx"]
    given, family, birth = _identity(c, idx, rng, 0.35)
    return _rep(
        c,
        idx,
        fin=np.where(c["has_fin"][idx], c["fin"][idx], None),
        a_number=c["a_number"][idx],
        surname=family,
        given_name=given,
        dob=birth,
        encounter_date=e["when"],
        encounter_type=np.array(["traffic", "workplace", "targeted", "collateral"], dtype=object)[
            rng.integers(0, 4, idx.size)
        ],
        arrested=e["arrest"],
    )


def criminal_history(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    # Each true arrest is recorded 88% of the time; a conviction adds a second event.
    obs = rng.binomial(c["arrests"], 0.88)
    idx = _repeat(obs)
    when = _dates(rng, c["admit"][idx] - 3 * 365 * DAY, c["presence_end"][idx], idx.size)
    # The first `convictions` recorded arrests of a person each led to a conviction.
    first = np.concatenate([[0], np.cumsum(obs)[:-1]])
    rank = np.arange(idx.size) - first[idx]
    ci = np.flatnonzero(rank < c["convictions"][idx])
    all_idx = np.concatenate([idx, idx[ci]])
    dates = np.concatenate([when, when[ci] + rng.integers(30, 400, ci.size) * DAY])
    dates = np.minimum(dates, c["presence_end"][all_idx])
    given, family, birth = _identity(c, all_idx, rng, 0.3)
    offence = np.array(["violent", "drug", "fraud", "property", "traffic", "other"], dtype=object)
    return _rep(
        c,
        all_idx,
        fin=np.where(
            c["has_fin"][all_idx] & (rng.random(all_idx.size) < 0.82), c["fin"][all_idx], None
        ),
        name_last=family,
        name_first=given,
        dob=birth,
        event_date=dates,
        event_type=np.concatenate(
            [
                np.full(idx.size, "arrest", dtype=object),
                np.full(ci.size, "conviction", dtype=object),
            ]
        ),
        offense_category=offence[rng.choice(6, all_idx.size, p=[0.15, 0.2, 0.12, 0.18, 0.25, 0.1])],
    )


def detention_bookings(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    e = t["encounters"]
    sel = e["arrest"]
    idx = e["idx"][sel]
    book_in = e["when"][sel]
    return _rep(
        c,
        idx,
        a_number=c["a_number"][idx],
        fin=np.where(c["has_fin"][idx], c["fin"][idx], None),
        book_in_date=book_in,
        book_out_date=book_in + rng.integers(1, 90, idx.size) * DAY,
    )


def court_orders(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    e = t["encounters"]
    has_case = np.zeros(len(c), bool)
    has_case[e["idx"][e["arrest"]]] = True
    has_case |= c["asylum"] | c["absconder"]
    idx = np.flatnonzero(has_case)
    hearing = _dates(rng, c["admit_until"][idx], c["presence_end"][idx], idx.size)
    order = np.where(
        c["absconder"][idx],
        "removal_in_absentia",
        np.array(["pending", "relief_granted", "terminated", "voluntary_departure"], dtype=object)[
            rng.choice(4, idx.size, p=[0.55, 0.15, 0.15, 0.15])
        ],
    )
    return _rep(
        c, idx, a_number=c["a_number"][idx], hearing_date=hearing, order_type=order.astype(object)
    )


def prior_removals(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    idx = np.flatnonzero(c["prior_removal"])
    return _rep(
        c,
        idx,
        a_number=c["a_number"][idx],
        fin=np.where(c["has_fin"][idx], c["fin"][idx], None),
        removal_date=c["admit"][idx] - rng.integers(400, 3000, idx.size) * DAY,
        removal_type=np.array(["expedited", "ordered", "reinstated"], dtype=object)[
            rng.integers(0, 3, idx.size)
        ],
    )


def watchlist_hits(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    # True associations hit with high scores; name-based false hits (decoys) are far commoner
    # and their scores overlap.
    true_n = np.where(c["true_watch"], rng.binomial(3, 0.75, len(c)), 0)
    false_n = rng.binomial(2, 0.035, len(c))
    idx = np.concatenate([_repeat(true_n), _repeat(false_n)])
    is_true = np.concatenate([np.ones(true_n.sum(), bool), np.zeros(false_n.sum(), bool)])
    score = np.where(is_true, rng.beta(9, 2, idx.size), rng.beta(5, 3, idx.size)).round(3)
    when = _dates(rng, c["admit"][idx] - 365 * DAY, c["presence_end"][idx], idx.size)
    return _rep(
        c,
        idx,
        screened_name=np.char.add(
            np.char.add(c["family"][idx].astype(str), ", "), c["given"][idx].astype(str)
        ).astype(object),
        screened_dob=c["birth"][idx],
        match_score=score,
        hit_date=when,
        list_name=np.array(["TSDB", "NCIC", "INTERPOL"], dtype=object)[
            rng.integers(0, 3, idx.size)
        ],
    )


def lost_stolen_documents(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    # Fraud: the passport travelled on was reported stolen before the trip. Benign: a
    # renewing traveller reported the old passport lost before renewal.
    fraud = np.flatnonzero(c["doc_fraud"])
    benign = np.flatnonzero(c["renewed"] & (rng.random(len(c)) < 0.25))
    idx = np.concatenate([fraud, benign])
    when = np.concatenate(
        [
            c["admit"][fraud] - rng.integers(30, 900, fraud.size) * DAY,
            c["renewal_date"][benign] - rng.integers(5, 60, benign.size) * DAY,
        ]
    )
    return _rep(
        c,
        idx,
        doc_number=c["passport1"][idx],
        issuing_country=c["region"][idx],
        report_date=when,
        report_type=np.concatenate(
            [
                np.full(fraud.size, "stolen", dtype=object),
                np.array(["lost", "stolen"], dtype=object)[rng.integers(0, 2, benign.size)],
            ]
        ),
    )


def border_lookouts(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    n = c["lookout"].astype(int) + (rng.random(len(c)) < 0.01)  # plus routine random referrals
    idx = _repeat(n)
    when = c["admit"][idx] - rng.integers(-2, 200, idx.size) * DAY
    return _rep(
        c,
        idx,
        subject_name=np.char.add(
            np.char.add(c["given"][idx].astype(str), " "), c["family"][idx].astype(str)
        ).astype(object),
        subject_dob=c["birth"][idx],
        passport=_passport_at(c, idx, when),
        lookout_date=when,
        lookout_type=np.array(["secondary", "refer", "intel"], dtype=object)[
            rng.integers(0, 3, idx.size)
        ],
        secondary_inspection=rng.random(idx.size) < 0.6,
    )


def address_changes(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    n = np.where(c["status"] != 1, rng.poisson(0.35 + 0.4 * (c["status"] == 2), len(c)), 0)
    idx = _repeat(n)
    has_a = rng.random(idx.size) < 0.5
    return _rep(
        c,
        idx,
        a_number=np.where(has_a, c["a_number"][idx], None),
        full_name=np.char.add(
            np.char.add(c["family"][idx].astype(str), ", "), c["given"][idx].astype(str)
        ).astype(object),
        dob=c["birth"][idx],
        change_date=_dates(rng, c["admit"][idx] + 30 * DAY, c["presence_end"][idx], idx.size),
        state=np.array(["CA", "TX", "NY", "FL", "IL", "NJ", "GA", "WA"], dtype=object)[
            rng.integers(0, 8, idx.size)
        ],
    )


def travel_reservations(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    # Bookings around trips; one-way bookings for some; booked-not-flown for a few.
    n = 1 + rng.poisson(0.5, len(c))
    idx = _repeat(n)
    booking = _dates(rng, c["admit"][idx] - 120 * DAY, c["presence_end"][idx], idx.size)
    one_way = np.where(c["oneway"][idx], rng.random(idx.size) < 0.7, rng.random(idx.size) < 0.08)
    return _rep(
        c,
        idx,
        pnr=np.char.add("PNR", rng.integers(1e6, 9e6, idx.size).astype(str)).astype(object),
        pax_surname=c["family"][idx],
        pax_given=c["given"][idx],
        pax_dob=c["birth"][idx],
        passport=_passport_at(c, idx, booking),
        booking_date=booking,
        travel_date=booking + rng.integers(3, 90, idx.size) * DAY,
        one_way=one_way,
        flown=rng.random(idx.size) < 0.9,
    )


def tip_reports(c: Chunk, t: Cols, rng: np.random.Generator) -> Cols:
    noise = rng.binomial(1, 0.02, len(c))  # most tips are noise about ordinary people
    idx = np.concatenate([_repeat(c["tips_true"]), _repeat(noise)])
    when = _dates(rng, c["admit_until"][idx], c["presence_end"][idx], idx.size)
    age = (
        ((when - c["birth"][idx]).astype(np.int64) / 365.25 + rng.normal(0, 2.5, idx.size))
        .round()
        .astype(np.int64)
    )
    return _rep(
        c,
        idx,
        subject_name=np.char.add(
            np.char.add(c["given"][idx].astype(str), " "), c["family"][idx].astype(str)
        ).astype(object),
        approx_age=age,
        reported_nationality=c["region"][idx],
        tip_date=when,
        tip_category=np.array(["overstay", "fraud", "threat", "employment"], dtype=object)[
            rng.integers(0, 4, idx.size)
        ],
        credibility=np.array(["low", "medium", "high"], dtype=object)[
            rng.choice(3, idx.size, p=[0.6, 0.3, 0.1])
        ],
    )


SYSTEM_BUILDERS = {
    "consular_visas": consular_visas,
    "visa_refusals": visa_refusals,
    "arrival_manifests": arrival_manifests,
    "admissions": admissions,
    "departure_manifests": departure_manifests,
    "land_exits": land_exits,
    "partner_entries": partner_entries,
    "biometric_enrollments": biometric_enrollments,
    "biometric_exits": biometric_exits,
    "student_records": student_records,
    "benefit_applications": benefit_applications,
    "benefit_decisions": benefit_decisions,
    "asylum_filings": asylum_filings,
    "work_authorizations": work_authorizations,
    "employment_checks": employment_checks,
    "enforcement_encounters": enforcement_encounters,
    "criminal_history": criminal_history,
    "detention_bookings": detention_bookings,
    "court_orders": court_orders,
    "prior_removals": prior_removals,
    "watchlist_hits": watchlist_hits,
    "lost_stolen_documents": lost_stolen_documents,
    "border_lookouts": border_lookouts,
    "address_changes": address_changes,
    "travel_reservations": travel_reservations,
    "tip_reports": tip_reports,
    # prior_leads is built in leads.py: it needs the historical cases and their outcomes.
}
