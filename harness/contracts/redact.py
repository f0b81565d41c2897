"""Keep credentials off the disk: every file the harness writes goes through `redact`.

What is scrubbed, wherever it appears in a string: the userinfo of a URL (`http://user:KEY@host`
-> `http://***@host`), secret-looking query parameters (`?api_key=...`, `token=`, `key=`...),
`Bearer` / `Basic` credentials, and the exact values registered with `register_secret` (API keys
and header values the user gave, URL passwords, the vLLM adapter's secret-looking `env`
values). By key, in JSON-like objects: the value of any key that looks like a secret (`*token`,
`*key`, `*secret`, `*password`, `authorization`, `cookie`, ...) and every value of an `env` or
`headers` map (names are kept; an `env:NAME` reference is kept, it is not the secret); in a
command line (a list of strings), the word after a secret-looking flag (`--api-key X`,
`--header NAME=X`). Why by value as well as by pattern: a key read from the environment can
reach an error message or a server's log in any shape.
"""

from __future__ import annotations

import base64
import re
from typing import Any
from urllib.parse import quote, unquote

import pandas as pd

MASK = "***"
#: Registered values shorter than this are only masked where a whole string equals them:
#: scrubbing "ab" out of every text would garble records without protecting anything.
MIN_SUBSTRING_CHARS = 4

_SECRETS: set[str] = set()
_BY_LENGTH: list[str] = []  # substring-masked secrets, longest first (one may contain another)

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s?#\"'<>]+@")  # to the authority's last @
_QUERY = re.compile(r"(?i)([?&;#](?:[a-z0-9_.\-]*(?:key|token|auth|secret|password|passwd|pwd|sig|signature|"
                    r"credentials?)|apikey|code)=)[^&#\s\"'<>]+")  # any `*key=`, `*_secret=`...: also in a #fragment
_SCHEME_CRED = re.compile(r"(?i)\b(bearer|basic)\s+([A-Za-z0-9._~+/=\-]{4,})")
_SECRET_KEY = re.compile(r"(?:^|_)(?:api_?key|apikey|key|token|secret|password|passwd|pwd|authorization|auth|"
                         r"cookie|set_cookie|credentials?|bearer|private_key|access_key)$")
#: Maps whose every value is masked (names kept): process environments and HTTP headers.
_MAP_KEYS = frozenset({"env", "environment", "headers", "header"})
_SECRET_FLAG = re.compile(r"^--?[a-z0-9_-]*(?:key|token|secret|password|passwd|header|authorization|auth|cookie)$", re.I)


def register_secret(value: str | None) -> None:
    """Mask `value` (and its URL-quoted form) wherever it appears in what the harness writes."""
    if not value:
        return
    words = value.split()
    if len(words) > 1:  # "Bearer <token>": the token alone is as secret as the whole value
        for word in words:
            if len(word) >= 8:
                register_secret(word)
    for form in {value, quote(value, safe=""), unquote(value)}:
        if form:
            _SECRETS.add(form)
    _BY_LENGTH[:] = sorted((s for s in _SECRETS if len(s) >= MIN_SUBSTRING_CHARS), key=len, reverse=True)


def register_basic_auth(user: str, password: str) -> str:
    """Register a URL's credentials and return the `Authorization` value they stand for."""
    register_secret(password or user)
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    register_secret(token)
    return f"Basic {token}"


def is_secret_key(key: str) -> bool:
    """True for keys such as HF_TOKEN, api_key, X-Api-Key, Authorization, password."""
    return bool(_SECRET_KEY.search(re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")))


def redact_text(text: str) -> str:
    """`text` with URL credentials, secret query parameters and registered values masked."""
    if text in _SECRETS:
        return MASK
    for secret in _BY_LENGTH:
        if secret in text:
            text = text.replace(secret, MASK)
    if "@" in text:
        text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    if "=" in text:
        text = _QUERY.sub(lambda m: m.group(1) + MASK, text)
    if "earer" in text or "asic" in text or "EARER" in text or "ASIC" in text:
        text = _SCHEME_CRED.sub(_scheme_credential, text)
    return text


def _scheme_credential(m: re.Match[str]) -> str:
    """`Bearer <any token>` masked; `Basic <x>` only when x looks like base64 (not "basic mode")."""
    scheme, token = m.group(1), m.group(2)
    if scheme.lower() == "basic" and (len(token) < 8 or not re.search(r"[0-9=+/]", token)):
        return m.group(0)
    return f"{scheme} {MASK}"


def _mask_value(value: Any) -> Any:
    """A secret's value: strings masked (an `env:NAME` reference kept), containers throughout."""
    if isinstance(value, str):
        return value if value.startswith("env:") or not value else MASK
    if isinstance(value, dict):
        return {k: _mask_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask_value(v) for v in value]
    return value


def _redact_argv(words: list[Any]) -> list[Any]:
    """A command line: the word after a secret-looking flag masked (a header's name kept)."""
    out: list[Any] = []
    flag = ""
    for word in words:
        if not isinstance(word, str):
            out.append(redact(word))
            flag = ""
            continue
        if flag:
            name, sep, _ = word.partition("=")
            out.append(f"{name}={MASK}" if flag.endswith("header") and sep else MASK)
            flag = ""
            continue
        name, sep, _ = word.partition("=")
        if _SECRET_FLAG.match(name):
            if sep:
                head, sep2, _ = word[len(name) + 1:].partition("=")
                out.append(f"{name}={head}={MASK}" if name.endswith("header") and sep2 else f"{name}={MASK}")
            else:
                out.append(word)
                flag = name.lower()
            continue
        out.append(redact_text(word))
    return out


def redact(obj: Any) -> Any:
    """A copy of a JSON-like object (dicts, lists, strings) with every credential masked."""
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            name = str(key)
            if name.lower() in _MAP_KEYS and isinstance(value, dict):
                out[key] = {k: _mask_value(v) for k, v in value.items()}
            elif is_secret_key(name) and not isinstance(value, (bool, int, float)) and value is not None:
                out[key] = _mask_value(value)
            else:
                out[key] = redact(value)
        return out
    if isinstance(obj, (list, tuple)):
        if any(isinstance(w, str) and w.startswith("-") for w in obj):
            return _redact_argv(list(obj))
        return [redact(v) for v in obj]
    return obj


def redact_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every string cell redacted (a copy when anything changed; lists and dicts in
    cells too, except lists that start with a number). Strings are redacted once per distinct
    value: tables hold few distinct ones."""
    changed: dict[str, Any] = {}
    for col in frame.columns:
        series = frame[col]
        if isinstance(series.dtype, pd.CategoricalDtype):
            cats = [redact(c) for c in series.cat.categories]
            if cats != list(series.cat.categories):
                changed[col] = series.cat.rename_categories(cats) if len(set(map(str, cats))) == len(cats) \
                    else series.astype(object).map(redact)
            continue
        if series.dtype != object and not pd.api.types.is_string_dtype(series.dtype):
            continue
        try:  # a column of hashable cells: redact each distinct value once (C-speed when clean)
            distinct = series.dropna().unique()
        except TypeError:  # lists or dicts in cells: cell by cell below
            distinct = None
        if distinct is not None:
            mapping = {v: redact(v) for v in distinct if isinstance(v, str)}
            mapping = {k: v for k, v in mapping.items() if v != k}
            if mapping:
                changed[col] = series.map(lambda v, m=mapping: m.get(v, v) if isinstance(v, str) else v)
            continue
        cache: dict[str, str] = {}
        values = series.tolist()
        dirty = False
        for i, value in enumerate(values):
            if isinstance(value, str):
                new = cache.get(value)
                if new is None:
                    new = cache[value] = redact_text(value)
            elif isinstance(value, (list, tuple, dict)):
                if isinstance(value, (list, tuple)) and (not len(value) or isinstance(value[0], (int, float))):
                    continue  # numbers (inter-token gaps): the first element tells, a million cells stay cheap
                new = redact(value)
            else:
                continue
            if new != value:
                values[i], dirty = new, True
        if dirty:
            changed[col] = pd.Series(values, index=series.index, dtype=series.dtype if series.dtype == object else None,
                                     name=col)
    if not changed:
        return frame
    out = frame.copy()
    for col, series in changed.items():
        out[col] = series
    return out


__all__ = ["MASK", "is_secret_key", "redact", "redact_frame", "redact_text", "register_basic_auth",
           "register_secret"]
