from cmr_rd.classes import CLASSES, FULL_NAMES, canonical_label


def test_abbreviations_and_full_names_map_to_classes():
    for abbr in CLASSES:
        assert canonical_label(abbr) == abbr
        assert canonical_label(abbr.lower()) == abbr
        assert canonical_label(FULL_NAMES[abbr].upper()) == abbr
        assert canonical_label(f"  {FULL_NAMES[abbr].title()}. ") == abbr


def test_variants_and_rejections():
    assert canonical_label("Left ventricular noncompaction") == "LVNC"
    assert canonical_label("left ventricular non\u2011compaction") == "LVNC"  # unicode hyphen
    assert canonical_label("\uff28\uff23\uff2d") == "HCM"  # full-width letters
    assert canonical_label("HCM or DCM") is None
    assert canonical_label("cardiomyopathy") is None
    assert canonical_label("") is None
    assert canonical_label(None) is None
