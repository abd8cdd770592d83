"""Named SQL parameters (`:manager_id`) translated to each driver's style.

A small scanner walks the SQL text and finds `:name` placeholders outside string literals
(`'..'`, `E'..'`, Oracle `q'[..]'`, PostgreSQL `$tag$..$tag$`), quoted identifiers (`".."`) and
comments (`--`, nested `/* */`). `::type` casts and `:=` are not placeholders. Values are always
bound (or, for COPY, quoted by the server), never spliced from user input.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")
_Q_CLOSERS = {"[": "]", "{": "}", "(": ")", "<": ">"}


class SqlSyntaxError(ValueError):
    """Unterminated literal, identifier or comment."""


@dataclass(frozen=True)
class Token:
    kind: str  # "code" | "string" | "ident" | "comment" | "param"
    text: str
    start: int


def tokenize(sql: str) -> Iterator[Token]:
    """Split `sql` into code, literal, identifier, comment and parameter tokens."""
    i, n = 0, len(sql)
    code_start = 0

    def flush(end: int) -> Iterator[Token]:
        if end > code_start:
            yield Token("code", sql[code_start:end], code_start)

    while i < n:
        c = sql[i]
        nxt = sql[i + 1] if i + 1 < n else ""
        end: int
        kind: str
        if c == "'":
            prev = sql[i - 1] if i > 0 else ""
            backslash = prev in "eE" and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
            end, kind = _scan_quoted(sql, i, "'", backslash), "string"
        elif (
            c in "qQ" and nxt == "'" and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_"))
        ):
            end, kind = _scan_q_quote(sql, i), "string"
        elif c == '"':
            end, kind = _scan_quoted(sql, i, '"', False), "ident"
        elif c == "-" and nxt == "-":
            nl = sql.find("\n", i)
            end, kind = (n if nl < 0 else nl), "comment"
        elif c == "/" and nxt == "*":
            end, kind = _scan_block_comment(sql, i), "comment"
        elif (
            c == "$"
            and (m := _DOLLAR_TAG.match(sql, i))
            and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_"))
        ):
            tag = m.group(0)
            close = sql.find(tag, m.end())
            if close < 0:
                raise SqlSyntaxError(f"unterminated dollar-quoted string at offset {i}")
            end, kind = close + len(tag), "string"
        elif c == ":" and nxt == ":":
            i += 2  # a cast: `x::int`
            continue
        elif c == ":" and (m := _NAME.match(sql, i + 1)) and not (i > 0 and sql[i - 1] == ":"):
            end, kind = m.end(), "param"
        else:
            i += 1
            continue
        yield from flush(i)
        yield Token(kind, sql[i:end], i)
        i = code_start = end
    yield from flush(n)


def _scan_quoted(sql: str, start: int, quote: str, backslash: bool) -> int:
    i, n = start + 1, len(sql)
    while i < n:
        c = sql[i]
        if backslash and c == "\\":
            i += 2
            continue
        if c == quote:
            if i + 1 < n and sql[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    what = "string literal" if quote == "'" else "quoted identifier"
    raise SqlSyntaxError(f"unterminated {what} at offset {start}")


def _scan_q_quote(sql: str, start: int) -> int:
    if start + 2 >= len(sql):
        raise SqlSyntaxError(f"unterminated q-quoted string at offset {start}")
    opener = sql[start + 2]
    closer = _Q_CLOSERS.get(opener, opener) + "'"
    close = sql.find(closer, start + 3)
    if close < 0:
        raise SqlSyntaxError(f"unterminated q-quoted string at offset {start}")
    return close + 2


def _scan_block_comment(sql: str, start: int) -> int:
    depth, i, n = 0, start, len(sql)
    while i < n:
        if sql.startswith("/*", i):
            depth += 1
            i += 2
        elif sql.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    raise SqlSyntaxError(f"unterminated comment at offset {start}")


@dataclass(frozen=True)
class ParsedSql:
    """SQL split around its placeholders: `parts[0] names[0] parts[1] ... parts[-1]`."""

    parts: tuple[str, ...]
    names: tuple[str, ...]

    def render(self, placeholder: Mapping[str, str]) -> str:
        out = [self.parts[0]]
        for name, part in zip(self.names, self.parts[1:], strict=True):
            out.append(placeholder[name])
            out.append(part)
        return "".join(out)


def parse_named(sql: str) -> ParsedSql:
    parts: list[str] = []
    names: list[str] = []
    buf: list[str] = []
    for tok in tokenize(sql):
        if tok.kind == "param":
            parts.append("".join(buf))
            buf = []
            names.append(tok.text[1:])
        else:
            buf.append(tok.text)
    parts.append("".join(buf))
    return ParsedSql(tuple(parts), tuple(names))


def param_names(sql: str) -> set[str]:
    return set(parse_named(sql).names)


def _check(parsed: ParsedSql, params: Mapping[str, object]) -> None:
    missing = sorted(set(parsed.names) - set(params))
    if missing:
        raise KeyError(f"no value for SQL parameter(s): {', '.join(missing)}")


def to_numbered(sql: str, params: Mapping[str, object]) -> tuple[str, list[object]]:
    """PostgreSQL/asyncpg style: `:a ... :b ... :a` -> `$1 ... $2 ... $1`, args in order."""
    parsed = parse_named(sql)
    _check(parsed, params)
    numbers: dict[str, str] = {}
    args: list[object] = []
    for name in parsed.names:
        if name not in numbers:
            args.append(params[name])
            numbers[name] = f"${len(args)}"
    return parsed.render(numbers), args


def to_qmark(sql: str, params: Mapping[str, object]) -> tuple[str, list[object]]:
    """sqlite3 `?` style: one argument per occurrence."""
    parsed = parse_named(sql)
    _check(parsed, params)
    return parsed.render({name: "?" for name in parsed.names}), [params[n] for n in parsed.names]


def to_oracle(sql: str, params: Mapping[str, object]) -> tuple[str, dict[str, object]]:
    """python-oracledb keeps `:name`; only the names the statement uses may be bound."""
    parsed = parse_named(sql)
    _check(parsed, params)
    return sql, {name: params[name] for name in dict.fromkeys(parsed.names)}


def strip_terminator(sql: str) -> str:
    """Drop a trailing `;` (and what follows it: blanks, comments) so the SQL can be wrapped."""
    last_semicolon = None
    for tok in tokenize(sql):
        if tok.kind == "code":
            stripped = tok.text.rstrip()
            if stripped:
                last_semicolon = tok.start + len(stripped) - 1 if stripped.endswith(";") else None
        elif tok.kind != "comment":
            last_semicolon = None
    return sql[:last_semicolon] if last_semicolon is not None else sql


def split_statements(sql: str) -> list[str]:
    """Split a script on top-level `;` (for migrations); empty statements are dropped."""
    statements: list[str] = []
    buf: list[str] = []
    for tok in tokenize(sql):
        if tok.kind == "code" and ";" in tok.text:
            pieces = tok.text.split(";")
            for piece in pieces[:-1]:
                buf.append(piece)
                statements.append("".join(buf))
                buf = []
            buf.append(pieces[-1])
        elif tok.kind != "comment":
            buf.append(tok.text)
    statements.append("".join(buf))
    return [s.strip() for s in statements if s.strip()]


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier (standard SQL; PostgreSQL, Oracle and SQLite)."""
    if "\x00" in name:
        raise ValueError("identifier contains NUL")
    return '"' + name.replace('"', '""') + '"'


__all__ = [
    "ParsedSql",
    "SqlSyntaxError",
    "Token",
    "param_names",
    "parse_named",
    "quote_ident",
    "split_statements",
    "strip_terminator",
    "to_numbered",
    "to_oracle",
    "to_qmark",
    "tokenize",
]
