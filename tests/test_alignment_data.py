"""Stage 1a data: PMC-VQA loading, CMR findings captions, the alignment mixture and its JSONL."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from cmr_rd.classes import FULL_NAMES
from cmr_rd.datasets.alignment import (
    CAPTION_PROMPTS,
    NO_PMC_NOTE,
    cmr_caption_records,
    findings_caption,
    mix_alignment,
)
from cmr_rd.datasets.pmcvqa import load_pmcvqa
from cmr_rd.jsonl import write_jsonl

REPO = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"\[[A-Z][A-Z_ ]*\]")
DISEASES = [name for key, name in FULL_NAMES.items() if key != "NOR"]

# ----------------------------------------------------------------------------- helpers


def check_record(r: dict, source: str) -> None:
    """The project-wide record shape (TRL conversational VLM form)."""
    assert set(r) == {"id", "source", "images", "messages", "label"}
    assert isinstance(r["id"], str) and r["id"]
    assert r["source"] == source
    assert isinstance(r["images"], list) and len(r["images"]) == 1
    assert isinstance(r["images"][0], str)
    user, assistant = r["messages"]
    assert user["role"] == "user" and assistant["role"] == "assistant"
    assert user["content"][0] == {"type": "image"}
    assert user["content"][1]["type"] == "text" and user["content"][1]["text"].strip()
    assert len(assistant["content"]) == 1 and assistant["content"][0]["type"] == "text"
    assert assistant["content"][0]["text"].strip()
    assert r["label"] is None or isinstance(r["label"], str)
    json.dumps(r, allow_nan=False)


def user_text(r: dict) -> str:
    return r["messages"][0]["content"][1]["text"]


def answer_text(r: dict) -> str:
    return r["messages"][1]["content"][0]["text"]


def _png(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 255 - shade, 40)).save(path, format="PNG")


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


V1_HEADER = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D"]
V1_HEADER += ["Answer_label", "Caption"]
V2_HEADER = ["index", "Figure_path", "Caption", "Question", "Choice A", "Choice B", "Choice C"]
V2_HEADER += ["Choice D", "Answer", "split"]
N_GOOD = 12


def write_v1(root: Path, answer_col: str = "Answer") -> dict[int, str]:
    """train.csv + images/ as in release 1; returns {bad row: expected reason fragment}."""
    rows = []
    for i in range(N_GOOD):
        _png(root / "images" / f"PMC{1000 + i}_F1.jpg", i * 20)
        rows.append(
            [
                f"PMC{1000 + i}_F1.jpg",
                f"What is the uptake pattern in figure {i}?",
                "Focal uptake pattern" if i % 2 else "C:No uptake pattern",
                "A:Diffuse uptake pattern",
                "B:Focal uptake pattern",
                "C:No uptake pattern",
                "D:Cannot determine from the information given",
                "B" if i % 2 else "C",
                f"caption {i}",
            ]
        )
    good = rows[0]
    bad = {
        3: (["PMC9999_F9.jpg", *good[1:]], "image not found"),
        6: ([good[0], good[1], "", *good[3:]], "missing answer"),
        9: ([good[0], good[1], "Spiculated mass", *good[3:7], "", good[8]], "matches no choice"),
        12: ([good[0], "", *good[2:]], "missing question"),
    }
    for n in sorted(bad):
        rows.insert(n, bad[n][0])
    header = [answer_col if c == "Answer" else c for c in V1_HEADER]
    _write_csv(root / "train.csv", header, rows)
    return {n: why for n, (_, why) in bad.items()}


def write_v2(root: Path) -> dict[int, str]:
    """train_2.csv + figures/ as in release 2 (letter answers, ' A: ...' choices)."""
    rows = []
    for i in range(N_GOOD):
        _png(root / "figures" / f"PMC8253797_Fig4_{i}.jpg", 200 - i * 10)
        rows.append(
            [
                str(i),
                f"PMC8253797_Fig4_{i}.jpg",
                "Golgi complexes (red), nuclei (light blue).",
                f" What color labels the Golgi complexes in panel {i}?",
                " A: Green ",
                " B: Red ",
                " C: Light blue ",
                " D: Yellow",
                "B",
                "train",
            ]
        )
    good = rows[0]
    bad = {
        1: ([*good[:1], "PMC0_missing.jpg", *good[2:]], "image not found"),
        5: ([*good[:8], "", good[9]], "missing answer"),
        8: ([*good[:8], "E", good[9]], "matches no choice"),
    }
    for n in sorted(bad):
        rows.insert(n, bad[n][0])
    _write_csv(root / "train_2.csv", V2_HEADER, rows)
    return {n: why for n, (_, why) in bad.items()}


@pytest.fixture
def pmc_v1(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    root = tmp_path / "pmc_v1"
    return root, write_v1(root)


@pytest.fixture
def pmc_v2(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    root = tmp_path / "pmc_v2"
    return root, write_v2(root)


# ----------------------------------------------------------------------------- PMC-VQA


def test_pmcvqa_v1_records_and_problems(pmc_v1):
    root, bad = pmc_v1
    records, problems = load_pmcvqa(root, "train")
    assert len(records) == N_GOOD
    for r in records:
        check_record(r, "pmcvqa")
        image = Path(r["images"][0])
        assert image.is_absolute() and image.is_file()
        assert image.parent == (root / "images").absolute()
        assert r["label"] is None
    first = records[0]
    assert user_text(first) == (
        "What is the uptake pattern in figure 0?\nA: Diffuse uptake pattern\n"
        "B: Focal uptake pattern\nC: No uptake pattern\n"
        "D: Cannot determine from the information given"
    )
    assert answer_text(first) == "No uptake pattern"  # "C:" prefix of the answer stripped
    assert answer_text(records[1]) == "Focal uptake pattern"
    assert len({r["id"] for r in records}) == N_GOOD
    assert {p["row"] for p in problems} == set(bad)
    for p in problems:
        assert p["file"] == "train.csv"
        assert bad[p["row"]] in p["reason"], p


def test_pmcvqa_v2_letter_answers(pmc_v2):
    root, bad = pmc_v2
    records, problems = load_pmcvqa(root, "train")
    assert len(records) == N_GOOD
    for r in records:
        check_record(r, "pmcvqa")
        assert Path(r["images"][0]).parent == (root / "figures").absolute()
        assert answer_text(r) == "Red"  # the choice's content, not the letter
        assert user_text(r).endswith("\nA: Green\nB: Red\nC: Light blue\nD: Yellow")
        assert not user_text(r).startswith(" ")
    assert {p["row"]: p["file"] for p in problems} == {n: "train_2.csv" for n in bad}
    for p in problems:
        assert bad[p["row"]] in p["reason"], p


def test_pmcvqa_prefers_version_2_and_reads_legacy_spelling(tmp_path):
    both = tmp_path / "both"
    write_v1(both)
    write_v2(both)
    records, problems = load_pmcvqa(both, "train")
    assert all("-train_2-" in r["id"] for r in records)
    assert {p["file"] for p in problems} == {"train_2.csv"}

    legacy = tmp_path / "legacy"
    bad = write_v1(legacy, answer_col="Anwser")  # the authors' own spelling
    records, problems = load_pmcvqa(legacy, "train")
    assert len(records) == N_GOOD and {p["row"] for p in problems} == set(bad)


def test_pmcvqa_answer_label_disagreement_is_a_problem(tmp_path):
    root = tmp_path / "pmc"
    _png(root / "images" / "a.jpg", 10)
    row = ["a.jpg", "Q?", "Focal", "A:Diffuse", "B:Focal", "C:None", "D:Other", "A", ""]
    _write_csv(root / "test.csv", V1_HEADER, [row])
    records, problems = load_pmcvqa(root, "test")
    assert records == []
    assert problems[0]["row"] == 0 and "Answer_label" in problems[0]["reason"]


def test_pmcvqa_limit_is_a_deterministic_subset(pmc_v2):
    root, _ = pmc_v2
    full, _ = load_pmcvqa(root, "train")
    a, problems = load_pmcvqa(root, "train", limit=5, seed=7)
    b, _ = load_pmcvqa(root, "train", limit=5, seed=7)
    c, _ = load_pmcvqa(root, "train", limit=5, seed=8)
    ids = [r["id"] for r in full]
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert [r["id"] for r in a] != [r["id"] for r in c]
    assert len(a) == 5 and all(r["id"] in ids for r in a)
    assert [r["id"] for r in a] == sorted((r["id"] for r in a), key=ids.index)  # file order
    assert len(problems) == 3  # problems still cover the whole file
    assert len(load_pmcvqa(root, "train", limit=100)[0]) == N_GOOD


def test_pmcvqa_missing_root_or_csv_names_what_it_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pmcvqa(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        load_pmcvqa(tmp_path / "empty", "test")
    message = str(err.value)
    assert str(tmp_path / "empty") in message
    assert "test_2.csv" in message and "test.csv" in message


# ----------------------------------------------------------------------------- findings captions


def _placeholder(s: str) -> str:
    if re.fullmatch(r"[\d/.\- ]+|\d{1,2} \w{3} \d{4}|\w+ \d{1,2}, \d{4}", s):
        return "[DATE]"
    if "," in s and re.search(r"\d", s):
        return "[ADDRESS]"
    if re.search(r"\d", s):
        return "[MRN]"
    if re.search(r"(?i)hospital|institute|cent(re|er)|clinic|infirmary|unit", s):
        return "[INSTITUTION]"
    return "[NAME]"


def scrub(report: str, phi: list[str]) -> str:
    """Stand-in for the de-identification module: PHI strings become placeholders."""
    key = tuple(phi)
    if key not in _SCRUBBERS:  # one alternation, longest first, instead of 10k replaces
        alternation = "|".join(re.escape(s) for s in sorted(phi, key=len, reverse=True))
        _SCRUBBERS[key] = re.compile(alternation)
    return _SCRUBBERS[key].sub(lambda m: _placeholder(m.group(0)), report)


_SCRUBBERS: dict[tuple[str, ...], re.Pattern[str]] = {}


@pytest.fixture(scope="module")
def synthetic_reports(tmp_path_factory) -> tuple[pd.DataFrame, list[str]]:
    src = REPO / "data" / "synthetic"
    if not ((src / "labels.csv").is_file() and (src / "phi_strings.json").is_file()):
        from cmr_rd.synth.cohort import SynthConfig, generate_cohort

        src = tmp_path_factory.mktemp("cohort")
        cfg = SynthConfig(
            scale=0.0, min_patients_per_class=2, lge_slices=6, matrix=96, cine_phases=1
        )
        generate_cohort(cfg, src, seed=3, workers=1)
    labels = pd.read_csv(src / "labels.csv", dtype=str, keep_default_na=False)
    phi = json.loads((src / "phi_strings.json").read_text())["strings"]
    return labels, phi


def test_findings_caption_on_synthetic_reports(synthetic_reports):
    labels, phi = synthetic_reports
    assert len(labels) >= 12
    for raw in labels["report"]:
        report = scrub(raw, phi)
        assert PLACEHOLDER.search(report)  # the stand-in scrubber did its job
        caption = findings_caption(report)
        assert caption, report
        low = caption.lower()
        assert "impression" not in low
        assert "in keeping with hypertrophic cardiomyopathy" not in low
        assert not any(name in low for name in DISEASES), caption
        assert not PLACEHOLDER.search(caption)
        assert re.search(r"\bLGE\b|enhancement", caption)
        impression = report.split("IMPRESSION:")[1].split("Reported by")[0].strip()
        assert impression not in caption
        # every caption sentence is findings text, so nothing of the header can leak
        findings = report.split("FINDINGS:")[1].split("IMPRESSION:")[0]
        for sentence in re.split(r"(?<=\.) (?=[A-Z(])", caption):
            assert sentence.rstrip(".") in findings
        assert findings_caption(raw) == caption  # header PHI never matters


def test_findings_caption_header_styles_and_placeholders():
    report = (
        "[INSTITUTION]\nPatient: [NAME]   MRN: [MRN]   DOB: [DATE]\n\n"
        "Clinical indication: breathlessness.\n\n"
        "Findings\n"
        "- The left ventricle is dilated (LVEDD 66 mm), LVEF 28%.\n"
        "- Compared with the study of [DATE] the septal wall is thinner.\n"
        "Contrast enhancement: mid-wall LGE in the septum. No pericardial effusion.\n"
        "LATE ENHANCEMENT\n"
        "- Native T1 1080 ms.\n"
        "Impression\n"
        "Dilated cardiomyopathy.\n"
        "Reported by: Dr. [PHYSICIAN]"
    )
    caption = findings_caption(report)
    assert caption == (
        "The left ventricle is dilated (LVEDD 66 mm), LVEF 28%. "
        "Contrast enhancement: mid-wall LGE in the septum. "
        "Native T1 1080 ms."
    )
    fallback = (
        "CARDIAC MRI\nName: [NAME]\nTechnique: PSIR LGE after gadobutrol 0.1 mmol/kg.\n\n"
        "Left ventricle normal. No late gadolinium enhancement. Atria normal.\n"
        "CONCLUSION: Normal study."
    )
    assert findings_caption(fallback) == "Left ventricle normal. No late gadolinium enhancement."
    assert findings_caption("IMPRESSION: Hypertrophic cardiomyopathy.") is None
    assert findings_caption("FINDINGS:\nNo pericardial effusion.\nIMPRESSION: normal") is None
    assert findings_caption("") is None


# ----------------------------------------------------------------------------- CMR records


def _cmr_inputs(synthetic_reports, n_patients: int = 8) -> tuple[list[dict], dict[str, str]]:
    labels, phi = synthetic_reports
    images, reports = [], {}
    for i, row in enumerate(labels.head(n_patients).itertuples()):
        patient = f"P{i:03d}"
        reports[patient] = scrub(row.report, phi)
        for k in range(3):
            images.append(
                {"id": f"{patient}_s{k}", "patient": patient, "image": f"png/{patient}_{k}.png"}
                | {"label": row.label}
            )
    return images, reports


def test_cmr_caption_records(synthetic_reports):
    images, reports = _cmr_inputs(synthetic_reports)
    images.append({"id": "P900_s0", "patient": "P900", "image": "png/x.png", "label": "NOR"})
    images.append({"id": "P901_s0", "patient": "P901", "image": "png/y.png", "label": "HCM"})
    images.append({"id": "P901_s1", "patient": "P901", "image": "png/z.png", "label": "HCM"})
    reports["P901"] = "IMPRESSION: Hypertrophic cardiomyopathy."
    records, problems = cmr_caption_records(images, reports, seed=0)
    assert len(records) == 24
    for r, img in zip(records, images, strict=False):
        check_record(r, "cmr")
        assert r["id"] == img["id"] and r["images"] == [img["image"]]
        assert r["label"] == img["label"]
        assert user_text(r) in CAPTION_PROMPTS
        assert answer_text(r) == findings_caption(reports[img["patient"]])
    assert problems == [
        {"patient": "P900", "reason": "no report", "images": 1},
        {"patient": "P901", "reason": "no usable findings caption in report", "images": 2},
    ]
    again, _ = cmr_caption_records(images, reports, seed=0)
    other, _ = cmr_caption_records(images, reports, seed=1)
    assert again == records
    assert len({user_text(r) for r in records}) > 1
    assert [user_text(r) for r in other] != [user_text(r) for r in records]


# ----------------------------------------------------------------------------- mixture and JSONL


def _fake(source: str, n: int) -> list[dict]:
    text = [{"type": "text", "text": "x"}]
    return [
        {
            "id": f"{source}-{i}",
            "source": source,
            "images": [f"/img/{source}/{i}.png"],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, *text]},
                {"role": "assistant", "content": text},
            ],
            "label": None,
        }
        for i in range(n)
    ]


def test_mix_proportions():
    cmr, pmc = _fake("cmr", 40), _fake("pmcvqa", 300)
    records, summary = mix_alignment(cmr, pmc, pmc_fraction=0.5, total=None, seed=1)
    assert summary["counts"] == {"cmr": 40, "pmcvqa": 40} and summary["total"] == 80
    assert {r["id"] for r in records} >= {r["id"] for r in cmr}
    assert summary["note"] == ""

    records, summary = mix_alignment(cmr, pmc, pmc_fraction=0.25, total=None, seed=1)
    assert summary["counts"] == {"cmr": 40, "pmcvqa": 13}  # 40 * 0.25 / 0.75

    records, summary = mix_alignment(cmr, pmc, pmc_fraction=0.75, total=40, seed=1)
    assert summary["counts"] == {"cmr": 10, "pmcvqa": 30} and len(records) == 40
    assert len({r["id"] for r in records}) == 40

    # interleaved, not appended
    sources = [r["source"] for r in records]
    assert sources != sorted(sources) and sources != sorted(sources, reverse=True)

    _, summary = mix_alignment(cmr, pmc[:5], pmc_fraction=0.5, total=None, seed=1)
    assert summary["counts"] == {"cmr": 40, "pmcvqa": 5} and "only 5 PMC-VQA" in summary["note"]

    with pytest.raises(ValueError):
        mix_alignment(cmr, pmc, pmc_fraction=1.5, total=None, seed=1)
    with pytest.raises(ValueError):
        mix_alignment(cmr, pmc, pmc_fraction=1.0, total=None, seed=1)


def test_mix_without_pmc_is_cmr_only():
    cmr = _fake("cmr", 12)
    records, summary = mix_alignment(cmr, [], pmc_fraction=0.3, total=None, seed=0)
    assert summary["counts"] == {"cmr": 12, "pmcvqa": 0}
    assert summary["note"] == NO_PMC_NOTE
    assert sorted(r["id"] for r in records) == sorted(r["id"] for r in cmr)
    records, summary = mix_alignment(cmr, [], pmc_fraction=0.3, total=5, seed=0)
    assert summary["counts"] == {"cmr": 5, "pmcvqa": 0} and NO_PMC_NOTE in summary["note"]


def test_mix_jsonl_is_deterministic(tmp_path):
    cmr, pmc = _fake("cmr", 30), _fake("pmcvqa", 100)
    cmr[0]["messages"][1]["content"] = [{"type": "text", "text": "LVEF ≥ 55%, T1 1050 ms"}]
    paths = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        records, _ = mix_alignment(cmr, pmc, pmc_fraction=0.4, total=None, seed=seed)
        paths.append(tmp_path / name / "align.jsonl")
        write_jsonl(records, paths[-1])
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b
    assert a != c
    assert a.endswith(b"\n") and "≥".encode() in a
    lines = a.decode("utf-8").splitlines()
    assert len(lines) == 50
    for line in lines:
        obj = json.loads(line)
        check_record(obj, obj["source"])
        assert line == json.dumps(obj, sort_keys=True, ensure_ascii=False)
    assert not list(tmp_path.glob("**/.*.tmp"))
    write_jsonl([], tmp_path / "empty.jsonl")
    assert (tmp_path / "empty.jsonl").read_bytes() == b""


def test_test_prompts_keep_the_most_central_slices_per_patient():
    from cmr_rd.datasets.build import prompt_records

    rows = [
        {"image": f"images/{p}/{p}_z{r:02d}.png", "patient": p, "label": "HCM", "split": split,
         "box": None, "slice_rank": r, "slice_position_mm": pos}
        for p, split in (("Pa", "test"), ("Pb", "test"), ("Pc", "train"))
        for r, pos in ((3, -10.0), (4, 0.0), (5, 10.0))
    ]  # fmt: skip
    rows[4]["slice_position_mm"] = 5.0  # Pb's rank 4 is off centre: its nearest are 4 then 3/5
    manifest = pd.DataFrame(rows)
    one = prompt_records(manifest, "test", "root", per_patient=1)
    assert [r["id"] for r in one] == ["Pa_z04", "Pb_z04"]
    two = prompt_records(manifest, "test", "root", per_patient=2)
    assert [r["id"] for r in two] == ["Pa_z03", "Pa_z04", "Pb_z03", "Pb_z04"]
    assert len(prompt_records(manifest, "test", "root")) == 6  # None: every slice
    assert len(prompt_records(manifest, "train", "root", per_patient=1)) == 1
