import pytest

from cmr_rd.ingest.deid import DEMO_KEY, DeidKey, MissingKeyError, load_key


def test_pseudonyms_are_stable_keyed_and_opaque():
    a, b = DeidKey(b"k" * 32, "test"), DeidKey(b"j" * 32, "test")
    assert a.pseudonym("MRN1234567") == a.pseudonym("MRN1234567")
    assert a.pseudonym("MRN1234567") != b.pseudonym("MRN1234567")
    assert a.pseudonym("MRN1234567") != a.pseudonym("MRN1234568")
    assert "1234567" not in a.pseudonym("MRN1234567")
    assert a.uid("x").startswith("2.25.") and len(a.uid("x")) <= 64


def test_key_precedence_env_then_file(tmp_path, monkeypatch):
    key_file = tmp_path / "key"
    key_file.write_bytes(b"file-secret-0123456789\n")
    monkeypatch.setenv("TEST_DEID_KEY", "env-secret-0123456789")
    assert load_key("TEST_DEID_KEY", str(key_file), synthetic=False).origin == "env:TEST_DEID_KEY"
    monkeypatch.delenv("TEST_DEID_KEY")
    key = load_key("TEST_DEID_KEY", str(key_file), synthetic=False)
    assert key.origin == "file" and key.secret == b"file-secret-0123456789"


def test_real_data_without_key_is_refused(monkeypatch):
    monkeypatch.delenv("TEST_DEID_KEY", raising=False)
    with pytest.raises(MissingKeyError, match="TEST_DEID_KEY"):
        load_key("TEST_DEID_KEY", None, synthetic=False)


def test_short_or_missing_key_file_is_refused(tmp_path):
    short = tmp_path / "short"
    short.write_bytes(b"abc")
    with pytest.raises(MissingKeyError, match="fewer than 16 bytes"):
        load_key("UNSET_VAR_X", str(short), synthetic=False)
    with pytest.raises(MissingKeyError, match="does not exist"):
        load_key("UNSET_VAR_X", str(tmp_path / "nope"), synthetic=False)


def test_demo_key_only_for_synthetic_with_warning(monkeypatch):
    monkeypatch.delenv("UNSET_VAR_X", raising=False)
    with pytest.warns(UserWarning, match="demo key"):
        key = load_key("UNSET_VAR_X", None, synthetic=True)
    assert key.secret == DEMO_KEY and key.origin == "demo"
