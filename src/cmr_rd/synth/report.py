"""Fake PHI and free-text CMR reports whose findings match the drawn anatomy.

PHI comes from fixed syllable lists, so names are distinctive strings that cannot be confused
with report words; every string planted anywhere is listed by `Phi.strings()`, the ground truth
for leak tests. Reports vary their phrasing (several templates per finding, shuffled secondary
findings) so that a model cannot learn one fixed sentence per class.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

import numpy as np

from cmr_rd.synth.phantom import Anatomy

FULL_NAMES = {
    "HCM": "Hypertrophic cardiomyopathy",
    "DCM": "Dilated cardiomyopathy",
    "CAM": "Cardiac amyloidosis",
    "LVNC": "Left ventricular non-compaction",
    "MI": "Myocardial infarction",
    "NOR": "Normal",
}

_FIRST_A = (
    "Al",
    "Bri",
    "Cal",
    "Dar",
    "Eli",
    "Fen",
    "Gal",
    "Hes",
    "Ily",
    "Jor",
    "Kae",
    "Lio",
    "Mer",
    "Nev",
    "Oda",
    "Pel",
    "Quen",
    "Ros",
    "Sev",
    "Tam",
    "Ula",
    "Ves",
    "Wyn",
    "Xan",
    "Yel",
    "Zor",
)
_FIRST_B = (
    "adine",
    "brec",
    "cyra",
    "dovan",
    "elith",
    "frey",
    "garde",
    "hild",
    "istan",
    "jorn",
    "kessa",
    "lumin",
    "mira",
    "norra",
    "ovane",
    "prith",
    "quill",
    "rieve",
    "sander",
    "thea",
    "uvane",
    "velle",
    "wenna",
    "xia",
    "ydra",
    "zeth",
)
_LAST_A = (
    "Ashk",
    "Brack",
    "Corv",
    "Dunv",
    "Elsk",
    "Farn",
    "Grisk",
    "Holv",
    "Ingr",
    "Jask",
    "Kelv",
    "Lorv",
    "Mabb",
    "Nesk",
    "Ormsk",
    "Prenn",
    "Quarv",
    "Ruthv",
    "Skarv",
    "Trevk",
    "Umbr",
    "Vandr",
    "Wexl",
    "Yarr",
    "Zelk",
)
_LAST_B = (
    "aby",
    "bridge",
    "combe",
    "dorf",
    "ersen",
    "field",
    "gard",
    "hollow",
    "ington",
    "kovic",
    "lund",
    "mere",
    "nault",
    "oway",
    "pike",
    "quist",
    "rowe",
    "stead",
    "thorpe",
    "ulme",
    "vik",
    "wick",
    "xley",
    "yard",
    "zabel",
)

# (name, address, vendor key): a site owns its scanners, so vendor follows the institution.
INSTITUTIONS: tuple[tuple[str, str, str], ...] = (
    ("St. Aldric Heart Institute", "14 Kestrel Road, Northvale NV4 2QT", "siemens"),
    ("Brennmoor University Hospital", "200 Ambervale Avenue, Brennmoor BR2 7LX", "philips"),
    ("Kestrelbay Medical Center", "3 Harrowgate Lane, Kestrelbay KB9 1RD", "ge"),
    ("Harwick Valley Clinic", "77 Linden Crescent, Harwick HW3 5PE", "siemens"),
    ("Queen Isolde Infirmary", "1 Thistledown Street, Oldcastle Bay OB1 4AZ", "ge"),
    ("Saint Orwen Cardiovascular Unit", "52 Wrenfield Road, Eastwick Rise ER6 8NJ", "philips"),
    ("Marrowby Regional Cardiac Centre", "9 Quarryside Way, Marrowby MB5 3TT", "siemens"),
)

_DATE_FORMATS = ("%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%Y-%m-%d", "%d %b %Y", "%B %d, %Y")
_AGE = {
    "HCM": (18, 70),
    "DCM": (28, 75),
    "CAM": (58, 88),
    "LVNC": (18, 62),
    "MI": (45, 84),
    "NOR": (19, 72),
}


@dataclass(frozen=True)
class Person:
    first: str
    last: str

    @property
    def dicom(self) -> str:
        return f"{self.last.upper()}^{self.first.upper()}"

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"

    @property
    def dr(self) -> str:
        return f"Dr. {self.first} {self.last}"

    def tokens(self) -> list[str]:
        return [self.first, self.last, self.first.upper(), self.last.upper()]


@dataclass(frozen=True)
class Phi:
    """One patient's identifiers, and the formats chosen for them (so they can be listed)."""

    patient: Person
    sex: str
    birth: dt.date
    study: dt.date
    report_date: dt.date
    study_time: str
    mrn: str
    accession: str
    institution: str
    address: str
    vendor: str
    referring: Person
    referring_dicom: str
    radiologist: Person
    radiologist_dicom: str
    operator: Person
    date_fmt: str  # report's format for exam and sign-off dates
    dob_fmt: str  # report's format for the birth date
    name_style: int  # report header name style
    weight_kg: int
    height_m: float

    @property
    def age(self) -> int:
        b, s = self.birth, self.study
        return s.year - b.year - ((s.month, s.day) < (b.month, b.day))

    @property
    def report_name(self) -> str:
        p = self.patient
        return (p.full, f"{p.last.upper()}, {p.first}", f"{p.first} {p.last.upper()}")[
            self.name_style
        ]

    @property
    def folder_name(self) -> str:
        """Patient folder, named like a PACS export: name plus MRN."""
        return f"{self.patient.last.upper()}_{self.patient.first.upper()}_{self.mrn}"

    def dicom_date(self, d: dt.date) -> str:
        return d.strftime("%Y%m%d")

    def strings(self) -> list[str]:
        """Every PHI string this patient's files can contain (all >= 4 chars)."""
        out = {
            self.patient.dicom,
            self.patient.full,
            self.report_name,
            self.folder_name,
            f"{self.patient.last.upper()}_{self.patient.first.upper()}",
            self.mrn,
            self.accession,
            self.institution,
            self.institution.upper(),
            self.address,
            self.referring_dicom,
            self.referring.dr,
            self.referring.full,
            self.radiologist_dicom,
            self.radiologist.dr,
            self.radiologist.full,
            self.operator.dicom,
            self.dicom_date(self.birth),
            self.dicom_date(self.study),
            self.birth.strftime(self.dob_fmt),
            self.study.strftime(self.date_fmt),
            self.report_date.strftime(self.date_fmt),
        }
        for person in (self.patient, self.referring, self.radiologist, self.operator):
            out.update(person.tokens())
        return sorted(s for s in out if len(s) >= 4)


def _person(rng: np.random.Generator) -> Person:
    first = _FIRST_A[rng.integers(len(_FIRST_A))] + _FIRST_B[rng.integers(len(_FIRST_B))]
    last = _LAST_A[rng.integers(len(_LAST_A))] + _LAST_B[rng.integers(len(_LAST_B))]
    return Person(first, last)


def _affine_code(seed: int, salt: str, index: int, mult: int, modulo: int) -> int:
    """Injective in `index` (mult coprime to modulo): unique identifiers without a registry."""
    offset = int(hashlib.sha256(f"{salt}|{seed}".encode()).hexdigest(), 16) % modulo
    return (index * mult + offset) % modulo


def make_phi(rng: np.random.Generator, label: str, index: int, seed: int) -> Phi:
    """Draw one patient's fake identifiers; MRN and accession are unique per patient index."""
    patient = _person(rng)
    referring, radiologist, operator = _person(rng), _person(rng), _person(rng)
    core = _affine_code(seed, "mrn", index, 7_654_321, 10_000_000)
    style = int(rng.integers(3))
    mrn = (f"MRN{core:07d}", f"{int(rng.integers(1, 10))}{core:07d}", f"H-{core:07d}")[style]
    study = dt.date(2019, 1, 1) + dt.timedelta(days=int(rng.integers(0, 7 * 365)))
    acc_core = _affine_code(seed, "acc", index, 3_141_593, 100_000_000)
    accession = (
        f"ACC{acc_core:08d}",
        f"A{study.year}{acc_core % 1_000_000:06d}{index % 10}",
        f"RX{acc_core:08d}",
    )[int(rng.integers(3))]
    lo, hi = _AGE[label]
    age = int(rng.integers(lo, hi + 1))
    birth = study - dt.timedelta(days=int(age * 365.25 + rng.integers(0, 360)))
    male_share = 0.8 if label == "CAM" else 0.62
    sex = "M" if rng.random() < male_share else "F"
    name, address, vendor = INSTITUTIONS[int(rng.integers(len(INSTITUTIONS)))]
    ref_style = int(rng.integers(3))
    referring_dicom = (
        f"{referring.last.upper()}^{referring.first.upper()}^^DR",
        f"DR^{referring.last.upper()}",
        referring.dicom,
    )[ref_style]
    radiologist_dicom = (radiologist.dicom, f"{radiologist.last}^{radiologist.first}^^Dr.")[
        int(rng.integers(2))
    ]
    hour, minute, sec = int(rng.integers(7, 18)), int(rng.integers(0, 60)), int(rng.integers(60))
    return Phi(
        patient=patient,
        sex=sex,
        birth=birth,
        study=study,
        report_date=study + dt.timedelta(days=int(rng.integers(0, 4))),
        study_time=f"{hour:02d}{minute:02d}{sec:02d}",
        mrn=mrn,
        accession=accession,
        institution=name,
        address=address,
        vendor=vendor,
        referring=referring,
        referring_dicom=referring_dicom,
        radiologist=radiologist,
        radiologist_dicom=radiologist_dicom,
        operator=operator,
        date_fmt=_DATE_FORMATS[int(rng.integers(len(_DATE_FORMATS)))],
        dob_fmt=_DATE_FORMATS[int(rng.integers(4))],
        name_style=int(rng.integers(3)),
        weight_kg=int(rng.integers(52, 110) if sex == "M" else rng.integers(45, 95)),
        height_m=round(float(rng.uniform(1.62, 1.95) if sex == "M" else rng.uniform(1.5, 1.8)), 2),
    )


def label_text(label: str, rng: np.random.Generator) -> str:
    """Mostly the abbreviation; ~20% the full name in varied case, as real label sheets are."""
    if rng.random() >= 0.2:
        return label
    name = FULL_NAMES[label]
    style = int(rng.integers(4))
    return (name, name.lower(), name.upper(), name.title())[style]


# ----------------------------------------------------------------------------- anatomy words

_SEG6 = (
    ("anterolateral", 0.0),
    ("anterior", 60.0),
    ("anteroseptal", 120.0),
    ("inferoseptal", 180.0),
    ("inferior", 240.0),
    ("inferolateral", 300.0),
)
_AHA6 = {
    "anterior": 1,
    "anteroseptal": 2,
    "inferoseptal": 3,
    "inferior": 4,
    "inferolateral": 5,
    "anterolateral": 6,
}
_SEG4 = (("lateral", 315.0), ("anterior", 45.0), ("septal", 135.0), ("inferior", 225.0))
_AHA4 = {"anterior": 13, "septal": 14, "inferior": 15, "lateral": 16}
_LEVELS = ("basal", "mid", "apical")


def slice_level(k: int, n: int) -> str:
    """Thirds of the stack: base, mid-cavity, apex."""
    u = k / max(n - 1, 1)
    return _LEVELS[0] if u < 1 / 3 else _LEVELS[1] if u < 2 / 3 else _LEVELS[2]


def level_words(k_lo: int, k_hi: int, n: int) -> str:
    levels = [lv for lv in _LEVELS if lv in {slice_level(k, n) for k in range(k_lo, k_hi + 1)}]
    return levels[0] if len(levels) == 1 else f"{levels[0]}-to-{levels[-1]}"


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    """Overlap in degrees of arcs [a0, a1] and [b0, b1] (a may wrap)."""
    total = 0.0
    for shift in (-360.0, 0.0, 360.0):
        total += max(0.0, min(a1, b1 + shift) - max(a0, b0 + shift))
    return total


def arc_segments(centre: float, extent: float, levels: list[str]) -> tuple[list[str], list[int]]:
    """Wall names (walking round the arc) and AHA segment numbers covered at the given levels.

    Wall names use the six-wall scheme unless the arc is purely apical (four walls there).
    """
    a0, a1 = centre - extent / 2.0, centre + extent / 2.0
    need = min(15.0, extent / 3)
    segs: list[int] = []
    for level in levels:
        scheme = _SEG4 if level == "apical" else _SEG6
        width = 90.0 if level == "apical" else 60.0
        for name, start in scheme:
            if _overlap(a0, a1, start, start + width) >= need:
                offset = 0 if level == "basal" else 6
                segs.append(_AHA4[name] if level == "apical" else _AHA6[name] + offset)
    scheme, width = (_SEG4, 90.0) if levels == ["apical"] else (_SEG6, 60.0)
    hits = []
    for name, start in scheme:
        if _overlap(a0, a1, start, start + width) >= need:
            # order walls from the arc's start, so the list reads round the ventricle
            hits.append(((start - a0 + width) % 360.0 - width, name))
    return [name for _, name in sorted(hits)], sorted(set(segs))


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _levels_of(k_lo: int, k_hi: int, n: int) -> list[str]:
    return [lv for lv in _LEVELS if lv in {slice_level(k, n) for k in range(k_lo, k_hi + 1)}]


# ----------------------------------------------------------------------------- findings


def _size_words(edd: int) -> str:
    if edd < 40:
        return "small"
    if edd <= 56:
        return "normal in size"
    if edd <= 59:
        return "at the upper limit of normal size"
    if edd <= 64:
        return "mildly dilated"
    if edd <= 70:
        return "moderately dilated"
    return "severely dilated"


def _ef_words(ef: int) -> str:
    if ef >= 70:
        return "hyperdynamic"
    if ef >= 55:
        return "normal"
    if ef >= 45:
        return "mildly impaired"
    if ef >= 35:
        return "moderately impaired"
    return "severely impaired"


def _lv_paragraph(anat: Anatomy, rng: np.random.Generator) -> str:
    edd = int(round(anat.edd_mm + rng.normal(0, 0.6)))
    ef = int(round(anat.ef * 100))
    size, func = _size_words(edd), _ef_words(ef)
    return _pick(
        rng,
        [
            f"The left ventricle is {size} (LVEDD {edd} mm) with {func} systolic function "
            f"(LVEF {ef}%).",
            f"LV end-diastolic diameter {edd} mm ({size}). Global LV systolic function is {func}, "
            f"LVEF {ef}%.",
            f"LVEDD {edd} mm; the left ventricle is {size}. LVEF {ef}% ({func}).",
        ],
    )


def _wall_paragraph(anat: Anatomy, rng: np.random.Generator) -> str:
    ts, tf = int(round(anat.t_sept)), int(round(anat.t_free))
    if anat.label == "HCM" and anat.hcm_variant == "asymmetric":
        ratio = anat.t_sept / anat.t_free
        return _pick(
            rng,
            [
                f"Asymmetric septal hypertrophy: maximal wall thickness {ts} mm in the "
                f"basal-to-mid anteroseptum, inferolateral wall {tf} mm (septal to free-wall "
                f"ratio {ratio:.1f}).",
                f"There is asymmetric hypertrophy of the interventricular septum measuring up "
                f"to {ts} mm, with the lateral wall measuring {tf} mm.",
                f"Maximal end-diastolic wall thickness {ts} mm (septum) versus {tf} mm in the free "
                f"wall, in keeping with asymmetric septal hypertrophy.",
            ],
        )
    if anat.label in ("HCM", "CAM"):
        return _pick(
            rng,
            [
                f"Concentric left ventricular hypertrophy, maximal wall thickness {max(ts, tf)} mm "
                f"(septum {ts} mm, lateral wall {tf} mm).",
                f"The LV walls are concentrically thickened: septum {ts} mm, inferolateral wall "
                f"{tf} mm.",
            ],
        )
    if anat.label == "LVNC":
        return _pick(
            rng,
            [
                f"The compacted myocardium is thin ({tf} mm in the lateral wall; septum {ts} mm).",
                f"Compact layer thickness {tf} mm laterally, septum {ts} mm.",
            ],
        )
    if anat.label == "DCM":
        return _pick(
            rng,
            [
                f"The walls are thin: septum {ts} mm, lateral wall {tf} mm.",
                f"Wall thickness is reduced (maximal {max(ts, tf)} mm).",
                f"Septal thickness {ts} mm, free wall {tf} mm.",
            ],
        )
    return _pick(
        rng,
        [
            f"Normal wall thickness (septum {ts} mm, inferolateral wall {tf} mm).",
            f"Maximal wall thickness {max(ts, tf)} mm, within normal limits.",
            f"LV wall thickness is normal: septum {ts} mm, lateral wall {tf} mm.",
        ],
    )


def _t1_sentence(anat: Anatomy, rng: np.random.Generator, field: float) -> str:
    t1 = int(round(anat.t1_myo / 5.0) * 5)
    if anat.t1_myo > 1250:
        qual = "markedly elevated"
    elif anat.t1_myo > 1080:
        qual = "mildly elevated"
    else:
        qual = "normal"
    return _pick(
        rng,
        [
            f"Native T1 (MOLLI, {field:.1f} T) in the mid septum is {qual} at {t1} ms (local "
            f"reference 950-1080 ms).",
            f"Septal native T1 {t1} ms ({qual}).",
            f"T1 mapping: mid-ventricular septal T1 {t1} ms, {qual}.",
        ],
    )


def _lge_paragraph(anat: Anatomy, rng: np.random.Generator) -> str:
    n = anat.n_slices
    if anat.label == "NOR":
        return _pick(
            rng,
            [
                "No late gadolinium enhancement.",
                "There is no myocardial late gadolinium enhancement.",
                "LGE imaging shows no scar or fibrosis.",
                "No focal or diffuse LGE is seen.",
            ],
        )
    if anat.label == "MI":
        levels = _levels_of(*anat.mi_slices, n)
        walls, segs = arc_segments(anat.mi_centre, anat.mi_extent, levels)
        pct = int(round(anat.mi_transmurality * 10) * 10)
        if anat.mi_transmurality >= 0.9:
            kind = "transmural"
        elif anat.mi_transmurality > 0.5:
            kind = _pick(rng, ["near-transmural", "extensive subendocardial"])
        else:
            kind = "subendocardial"
        terr = {
            "LAD": "left anterior descending (LAD)",
            "RCA": "right coronary artery (RCA)",
            "LCx": "left circumflex (LCx)",
        }[anat.mi_territory]
        where = f"{level_words(*anat.mi_slices, n)} {_join(walls)}"
        seg_txt = ", ".join(str(s) for s in segs)
        first = _pick(
            rng,
            [
                f"There is {kind} LGE in the {where} segments (AHA {seg_txt}), approximately "
                f"{pct}% transmural, in a {terr} territory distribution.",
                f"{kind.capitalize()} late enhancement of the {where} wall (~{pct}% "
                f"transmurality, AHA segments {seg_txt}), corresponding to the {terr} territory.",
                f"LGE: {kind}, subendocardial-based scar involving the {where} segments "
                f"({seg_txt}); maximal transmurality about {pct}%; {anat.mi_territory} territory.",
            ],
        )
        if anat.mi_transmurality > 0.5:
            via = _pick(
                rng,
                [
                    "Segments with >50% transmurality have a low likelihood of functional recovery "
                    "after revascularisation.",
                    "The infarcted segments are not viable.",
                ],
            )
        else:
            via = _pick(
                rng,
                [
                    "The affected segments remain viable (<50% transmural).",
                    "Viability is preserved in the affected segments.",
                ],
            )
        wma = "akinesia" if anat.mi_transmurality > 0.5 else "hypokinesia"
        return f"{first} {via} Regional {wma} of the {_join(walls)} wall."
    if anat.label == "HCM":
        sites = [p for p in anat.patches if "insertion" in p.name]
        names = [p.name.split()[0] for p in sites]
        lo = min(p.k_lo for p in sites)
        hi = max(p.k_hi for p in sites)
        if len(names) == 2:
            loc = _pick(
                rng,
                [
                    "anterior and inferior RV insertion points",
                    "superior and inferior right ventricular insertion points",
                ],
            )
        else:
            loc = f"{names[0]} RV insertion point"
        text = _pick(
            rng,
            [
                f"Patchy mid-wall LGE at the {loc} ({level_words(lo, hi, n)}).",
                f"There is patchy, non-ischaemic mid-myocardial enhancement at the {loc}, "
                f"{level_words(lo, hi, n)} levels.",
                f"LGE: focal mid-wall fibrosis at the {loc}.",
            ],
        )
        septal = [p for p in anat.patches if p.name == "septal mid-wall"]
        if septal:
            text += " " + _pick(
                rng,
                [
                    "Further patchy mid-wall LGE within the hypertrophied septum.",
                    "Additional patchy enhancement is seen in the thickest septal segments.",
                ],
            )
        return text
    if anat.label == "DCM":
        if not anat.dcm_stripe:
            return _pick(
                rng,
                [
                    "No late gadolinium enhancement.",
                    "No LGE; in particular no subendocardial (ischaemic) scar.",
                    "There is no myocardial LGE.",
                ],
            )
        p = anat.patches[0]
        return _pick(
            rng,
            [
                f"Linear mid-wall LGE in the {level_words(p.k_lo, p.k_hi, n)} interventricular "
                f"septum (septal stripe), a non-ischaemic pattern.",
                f"There is a mid-wall stripe of enhancement in the {level_words(p.k_lo, p.k_hi, n)}"
                f" septum; no subendocardial scar.",
                f"LGE: septal mid-wall stripe ({level_words(p.k_lo, p.k_hi, n)}).",
            ],
        )
    if anat.label == "CAM":
        text = _pick(
            rng,
            [
                "Diffuse global subendocardial LGE involving all segments, with difficulty nulling "
                "the myocardium.",
                "There is circumferential subendocardial enhancement at all levels; optimal "
                "myocardial nulling could not be achieved.",
                "Global subendocardial late enhancement; the myocardium is difficult to null and "
                "the blood pool appears dark.",
            ],
        )
        if anat.cam_patchy:
            text += " " + _pick(
                rng,
                [
                    "Patchy transmural extension in several segments.",
                    "In places the enhancement extends transmurally.",
                ],
            )
        text += " " + _pick(
            rng,
            [
                "On the TI scout the myocardium nulls before the blood pool.",
                "Abnormal gadolinium kinetics: myocardial null point precedes the blood pool.",
                "The blood pool nulls early relative to the myocardium.",
            ],
        )
        return text + " RV free wall enhancement is also present."
    # LVNC
    lo = anat.lvnc_from
    levels = _levels_of(lo, n - 1, n)
    walls, _ = arc_segments(anat.lvnc_arc[0], min(anat.lvnc_arc[1], 200.0), levels)
    ratio = anat.lvnc_ratio
    text = _pick(
        rng,
        [
            f"Prominent trabeculation with deep intertrabecular recesses in the "
            f"{level_words(lo, n - 1, n)} {_join(walls)} walls; the non-compacted to compacted "
            f"ratio is {ratio:.1f} in end-diastole (threshold 2.3).",
            f"Two-layered myocardium with a thick trabeculated (non-compacted) layer over a thin "
            f"compact layer, NC/C ratio {ratio:.1f}, involving the {_join(walls)} walls "
            f"({level_words(lo, n - 1, n)}).",
            f"Hypertrabeculation of the {_join(walls)} segments from the {levels[0]} level to the "
            f"apex, maximal NC/C {ratio:.1f}.",
        ],
    )
    if anat.patches:
        return text + " Small focus of mid-wall LGE at the inferior RV insertion point."
    return (
        text
        + " "
        + _pick(
            rng,
            [
                "No LGE.",
                "No late gadolinium enhancement.",
                "There is no myocardial scar on LGE imaging.",
            ],
        )
    )


def _impression(anat: Anatomy, rng: np.random.Generator) -> str:
    if anat.label == "NOR":
        return _pick(
            rng,
            [
                "Normal cardiac MRI. No evidence of scar or cardiomyopathy.",
                "Structurally normal heart with normal biventricular function and no LGE.",
                "Normal study.",
            ],
        )
    if anat.label == "MI":
        pct = int(round(anat.mi_transmurality * 10) * 10)
        return _pick(
            rng,
            [
                f"Myocardial infarction in the {anat.mi_territory} territory, ~{pct}% transmural.",
                f"Chronic {anat.mi_territory}-territory myocardial infarction.",
                f"Ischaemic scar consistent with previous myocardial infarction "
                f"({anat.mi_territory} territory).",
            ],
        )
    if anat.label == "HCM":
        variant = "asymmetric septal" if anat.hcm_variant == "asymmetric" else "concentric"
        return _pick(
            rng,
            [
                f"Hypertrophic cardiomyopathy ({variant} phenotype) with RV insertion point "
                f"fibrosis.",
                f"Appearances in keeping with hypertrophic cardiomyopathy, {variant} variant.",
                "Findings consistent with hypertrophic cardiomyopathy.",
            ],
        )
    if anat.label == "DCM":
        tail = " with septal mid-wall fibrosis" if anat.dcm_stripe else ""
        return _pick(
            rng,
            [
                f"Dilated cardiomyopathy{tail}.",
                f"Non-ischaemic dilated cardiomyopathy{tail}.",
                f"Dilated, impaired left ventricle in keeping with dilated cardiomyopathy{tail}.",
            ],
        )
    if anat.label == "CAM":
        return _pick(
            rng,
            [
                "Appearances are highly suggestive of cardiac amyloidosis.",
                "Cardiac amyloidosis is the most likely diagnosis.",
                "Findings typical of cardiac amyloidosis (concentric thickening, global "
                "subendocardial LGE, abnormal nulling).",
            ],
        )
    return _pick(
        rng,
        [
            "Left ventricular non-compaction.",
            f"Findings fulfil criteria for left ventricular non-compaction (NC/C "
            f"{anat.lvnc_ratio:.1f}).",
            "Appearances consistent with left ventricular non-compaction cardiomyopathy.",
        ],
    )


_INDICATIONS = {
    "HCM": [
        "Family history of sudden cardiac death.",
        "Abnormal ECG with deep T-wave inversion.",
        "Murmur and LVH on echocardiography.",
        "Exertional chest tightness.",
    ],
    "DCM": [
        "Heart failure with reduced ejection fraction.",
        "Breathlessness, dilated LV on echo.",
        "Assessment of aetiology of LV impairment.",
    ],
    "CAM": [
        "Heart failure with preserved ejection fraction and LVH on echo.",
        "Low-voltage ECG with thick walls on echo.",
        "Raised NT-proBNP, ?infiltrative process.",
    ],
    "LVNC": [
        "Hypertrabeculation on echocardiography.",
        "Palpitations; prominent trabeculae on echo.",
        "Family screening.",
    ],
    "MI": [
        "Viability assessment prior to revascularisation.",
        "Previous chest pain, regional wall motion abnormality.",
        "Known coronary artery disease.",
    ],
    "NOR": [
        "Palpitations.",
        "Atypical chest pain.",
        "Abnormal ECG, ?cardiomyopathy.",
        "Family screening.",
    ],
}

_OTHER = {
    "atria": {
        "CAM": "Both atria are dilated with thickened interatrial septum.",
        "HCM": "The left atrium is dilated.",
        "DCM": "The left atrium is dilated.",
    },
    "effusion": {"CAM": "Small pericardial effusion."},
    "rv": {
        "CAM": "The RV free wall is thickened; RV function is mildly reduced.",
        "DCM": "The RV is mildly dilated with borderline function.",
    },
}


def _secondary(anat: Anatomy, rng: np.random.Generator) -> list[str]:
    lab = anat.label
    items = [
        _OTHER["atria"].get(lab, _pick(rng, ["Normal atrial size.", "The atria are not dilated."])),
        _OTHER["effusion"].get(
            lab, _pick(rng, ["No pericardial effusion.", "The pericardium is normal."])
        ),
        _OTHER["rv"].get(
            lab,
            _pick(
                rng,
                [
                    "Normal RV size and function.",
                    "The right ventricle is normal in size with preserved function.",
                ],
            ),
        ),
        _pick(
            rng,
            [
                "No significant valvular abnormality.",
                "Trivial mitral regurgitation.",
                "Valves appear unremarkable.",
            ],
        ),
        _pick(rng, ["No intracardiac thrombus.", "Extracardiac structures are unremarkable."]),
    ]
    if lab == "HCM" and anat.hcm_variant == "asymmetric" and rng.random() < 0.35:
        items.append(
            "Systolic anterior motion of the anterior mitral leaflet with LVOT flow acceleration."
        )
    order = rng.permutation(len(items))
    return [items[i] for i in order]


def write_report(
    anat: Anatomy, phi: Phi, rng: np.random.Generator, field_strength: float, manufacturer: str
) -> str:
    """The full report: PHI header, indication, technique, findings, impression, signature."""
    dob = phi.birth.strftime(phi.dob_fmt)
    exam = phi.study.strftime(phi.date_fmt)
    signed = phi.report_date.strftime(phi.date_fmt)
    header_style = int(rng.integers(2))
    if header_style == 0:
        header = [
            phi.institution.upper(),
            phi.address,
            "Department of Cardiovascular Imaging",
            "",
            "CARDIAC MRI REPORT",
            f"Patient: {phi.report_name}    MRN: {phi.mrn}    DOB: {dob}    Sex: {phi.sex}",
            f"Exam date: {exam}    Accession: {phi.accession}",
            f"Referring physician: {phi.referring.dr}",
        ]
    else:
        header = [
            f"{phi.institution} - {phi.address}",
            "MRI HEART WITH AND WITHOUT CONTRAST (VIABILITY)",
            f"Name: {phi.report_name}",
            f"Hospital number: {phi.mrn}",
            f"Date of birth: {dob} (age {phi.age})",
            f"Date of examination: {exam}",
            f"Accession no.: {phi.accession}",
            f"Requested by: {phi.referring.dr}",
        ]
    indication = _pick(rng, _INDICATIONS[anat.label])
    agent = _pick(
        rng,
        ["gadobutrol 0.15 mmol/kg", "gadoterate meglumine 0.2 mmol/kg", "gadobutrol 0.1 mmol/kg"],
    )
    technique = _pick(
        rng,
        [
            f"{field_strength:.1f} T {manufacturer} scanner. Cine SSFP in short-axis and long-axis "
            f"planes, native T1 mapping (MOLLI), TI scout and phase-sensitive inversion-recovery "
            f"LGE imaging 10 minutes after {agent}.",
            f"Performed at {field_strength:.1f} T. Localisers, SSFP cines, MOLLI T1 map, "
            f"Look-Locker TI scout and PSIR late gadolinium enhancement after {agent}.",
        ],
    )
    findings = [
        _lv_paragraph(anat, rng),
        _wall_paragraph(anat, rng),
        _t1_sentence(anat, rng, field_strength),
        _lge_paragraph(anat, rng),
    ]
    findings += _secondary(anat, rng)
    title = _pick(
        rng,
        [
            "Consultant Cardiac Radiologist",
            "Consultant Cardiologist (CMR)",
            "Attending Radiologist",
        ],
    )
    sign = [f"Reported by: {phi.radiologist.dr}, {title}", f"Electronically signed: {signed}"]
    parts = (
        header
        + ["", f"CLINICAL INDICATION: {indication}", "", f"TECHNIQUE: {technique}", "", "FINDINGS:"]
        + findings
        + ["", "IMPRESSION:", _impression(anat, rng), ""]
        + sign
    )
    return "\n".join(parts)
