"""Where the token comes from, and that it never shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from stitch_import.errors import ConfigurationError
from stitch_import.tokens import TokenSource, fingerprint


def test_order_of_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "token"
    secret.write_text("  at_from_file\n")
    monkeypatch.setenv("STITCH_IMPORT_TOKEN", "at_from_env")
    assert TokenSource().current() == "at_from_env"
    monkeypatch.setenv("STITCH_IMPORT_TOKEN_FILE", str(secret))
    assert TokenSource().current() == "at_from_file"
    assert TokenSource("at_given").current() == "at_given"
    assert TokenSource(lambda: "at_called").current() == "at_called"


def test_the_token_never_shows_in_repr(tmp_path: Path) -> None:
    source = TokenSource("at_secretsecretsecret")
    assert "secret" not in repr(source)
    source.set("at_othersecret")
    assert "secret" not in repr(source) and source.current() == "at_othersecret"
    assert fingerprint("at_a") != fingerprint("at_b") and "at_a" not in fingerprint("at_a")


def test_missing_or_unusable_tokens_say_what_to_do(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STITCH_IMPORT_TOKEN", raising=False)
    monkeypatch.delenv("STITCH_IMPORT_TOKEN_FILE", raising=False)
    with pytest.raises(ConfigurationError, match="STITCH_IMPORT_TOKEN"):
        TokenSource().current()
    with pytest.raises(ConfigurationError, match="cannot read the token file"):
        TokenSource(token_file=tmp_path / "absent").current()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty"):
        TokenSource(token_file=empty).current()
    with pytest.raises(ConfigurationError, match="callable returned no token"):
        TokenSource(lambda: "").current()
    with pytest.raises(ConfigurationError):
        TokenSource("   ")
