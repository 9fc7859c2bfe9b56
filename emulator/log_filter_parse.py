"""The Logging query language, parsed: text -> a tree of And / Or / Not / Compare.

Pure (no I/O). The grammar and its meaning follow Google's "Logging query language"
(https://cloud.google.com/logging/docs/view/logging-query-language):

- ``NOT`` (or a ``-`` prefix) binds tightest, then ``OR``, then ``AND``: ``a OR NOT b AND
  NOT c OR d`` is ``(a OR (NOT b)) AND ((NOT c) OR d)``. Adjacent terms are joined by an
  implicit ``AND``. Operators are upper case only: a lower-case ``and`` is a search term.
- A comparison is ``FIELD OP VALUE`` with OP one of ``= != < <= > >= :`` (``:`` is "has",
  ``FIELD:*`` tests presence). VALUE is a number, a quoted string, unquoted text without
  special characters, or a parenthesised Boolean combination of values, in which case the
  field and operator apply to each (``resource.type = ("a" OR "b")``).
- Path components with special characters are double-quoted:
  ``labels."compute.googleapis.com/resource_id"``.
- ``--`` starts a comment that runs to the end of the line.

What the emulator does not do, it refuses with INVALID_ARGUMENT (never silently): global
restrictions (a bare value that searches every field), functions (``SEARCH()``,
``log_id()``, ``sample()``…) and regular expressions (``=~``, ``!~``).

Syntax errors read like Google's (seen in gcloud output, e.g. ``INVALID_ARGUMENT:
Unparseable filter: syntax error at line 1, column 200, token ':'``), with a hint after.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

# Characters that end unquoted text ("String values must be double-quoted to escape …
# ~ = () : > < , *" in Google's "Values and conversions"); "!" starts != and !~.
_SPECIAL = set('()=!<>:~,*"')
_OPS = ("!=", "<=", ">=", "=~", "!~", "=", "<", ">", ":")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "a": "\a"}
MAX_FILTER_CHARS = 20_000  # "The length of a query can't exceed 20,000 characters."
MAX_DEPTH = 100  # nested parentheses and NOTs; SQLite's own limit is 1,000

Op = Literal["=", "!=", "<", "<=", ">", ">=", ":"]


class FilterError(ValueError):
    """A filter the emulator cannot run; ``message`` is the INVALID_ARGUMENT text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- the tree -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Path:
    parts: tuple[str, ...]
    text: str  # as written, for messages
    line: int
    col: int


@dataclass(frozen=True)
class Value:
    text: str
    quoted: bool


@dataclass(frozen=True)
class Compare:
    path: Path
    op: Op
    value: Value | None  # None: ``FIELD:*``


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = And | Or | Not | Compare
_Item = Callable[[], Node]  # parses one term: a comparison, or a value inside FIELD OP (…)


# -- tokens -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: Literal["word", "string", "op", "(", ")", "*", "-", ",", "end"]
    text: str  # the source text, for messages
    start: int
    end: int
    value: str = ""  # a string's content, unescaped
    parts: tuple[str, ...] = ()  # a word's dot-separated components


class _Lexer:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0

    def position(self, offset: int) -> tuple[int, int]:
        line = self.s.count("\n", 0, offset) + 1
        return line, offset - (self.s.rfind("\n", 0, offset) + 1) + 1

    def error(self, offset: int, token: str, hint: str) -> FilterError:
        line, col = self.position(offset)
        return FilterError(f"Unparseable filter: syntax error at line {line}, column {col}, "
                           f"token '{token}': {hint}")

    def tokens(self) -> list[Token]:
        out: list[Token] = []
        s, n = self.s, len(self.s)
        while True:
            while self.i < n and s[self.i].isspace():
                self.i += 1
            if s.startswith("--", self.i):  # a comment, to the end of the line
                nl = s.find("\n", self.i)
                self.i = n if nl < 0 else nl
                continue
            if self.i >= n:
                out.append(Token("end", "", n, n))
                return out
            start, c = self.i, s[self.i]
            if c == '"':
                value = self._string()
                out.append(Token("string", s[start:self.i], start, self.i, value=value))
            elif c in "()*-,":
                self.i += 1
                out.append(Token(c, c, start, self.i))  # type: ignore[arg-type]
            elif c in _SPECIAL:
                op = next((o for o in _OPS if s.startswith(o, start)), None)
                if op is None:
                    raise self.error(start, c, "'!' must be followed by '=' or '~'")
                self.i += len(op)
                out.append(Token("op", op, start, self.i))
            else:
                parts = self._word()
                out.append(Token("word", s[start:self.i], start, self.i, parts=parts))

    def _string(self) -> str:
        s, n, start = self.s, len(self.s), self.i
        self.i += 1
        out: list[str] = []
        while self.i < n and s[self.i] != '"':
            c = s[self.i]
            if c == "\\" and self.i + 1 < n:
                nxt = s[self.i + 1]
                octal = re.match(r"[0-7]{1,3}", s[self.i + 1:self.i + 4])
                if octal:
                    out.append(chr(int(octal.group(), 8)))
                    self.i += 1 + len(octal.group())
                    continue
                out.append(_ESCAPES.get(nxt, nxt))  # \" \\ and any other char as itself
                self.i += 2
                continue
            out.append(c)
            self.i += 1
        if self.i >= n:
            raise self.error(start, s[start:start + 20],
                             "this string has no closing double quote")
        self.i += 1
        return "".join(out)

    def _word(self) -> tuple[str, ...]:
        """Unquoted text up to a space or a special character; a path's components may be
        quoted after a dot: ``labels."logging.googleapis.com/x".y``."""
        s, n = self.s, len(self.s)
        parts: list[str] = []
        while True:
            if self.i < n and s[self.i] == '"' and parts:
                parts.append(self._string())
            else:
                start = self.i
                while (self.i < n and not s[self.i].isspace() and s[self.i] not in _SPECIAL
                       and s[self.i] != "."):
                    self.i += 1
                parts.append(s[start:self.i])
            if self.i < n and s[self.i] == ".":
                self.i += 1
                continue
            return tuple(parts)


# -- the parser ---------------------------------------------------------------------------

_KEYWORDS = ("AND", "OR", "NOT")


class _Parser:
    def __init__(self, text: str) -> None:
        self.lexer = _Lexer(text)
        self.toks = self.lexer.tokens()
        self.k = 0
        self.term_item: _Item = self.term  # one bound method, so that ``is`` tells it apart
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.toks[self.k]

    def next(self) -> Token:
        t = self.toks[self.k]
        self.k += 1
        return t

    def error(self, t: Token, hint: str) -> FilterError:
        return self.lexer.error(t.start, t.text or "<end of filter>", hint)

    def is_kw(self, t: Token, *words: str) -> bool:
        return t.kind == "word" and t.text in words

    def starts_term(self, t: Token) -> bool:
        return t.kind in ("word", "string", "(", "-") and not self.is_kw(t, "AND", "OR")

    def parse(self) -> Node | None:
        if self.tok.kind == "end":
            return None
        node = self.expression(self.term_item)
        if self.tok.kind != "end":
            hint = ("this ')' has no matching '('" if self.tok.kind == ")"
                    else "expected AND, OR or the end of the filter")
            raise self.error(self.tok, hint)
        return node

    # expression = disjunction { ["AND"] disjunction }; disjunction = unary { "OR" unary }.
    # ``item`` parses one term: a comparison at the top, a value inside ``FIELD OP (…)``.
    def expression(self, item: _Item) -> Node:
        items = [self.disjunction(item)]
        while True:
            if self.is_kw(self.tok, "AND"):
                self.next()
                items.append(self.disjunction(item))
            elif self.starts_term(self.tok):
                items.append(self.disjunction(item))  # implicit AND
            else:
                return items[0] if len(items) == 1 else And(tuple(items))

    def disjunction(self, item: _Item) -> Node:
        items = [self.unary(item)]
        while self.is_kw(self.tok, "OR"):
            self.next()
            items.append(self.unary(item))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def unary(self, item: _Item) -> Node:
        t = self.tok
        if t.kind in ("(", "-") or self.is_kw(t, "NOT"):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.error(t, f"parentheses and NOTs nest more than {MAX_DEPTH} deep")
        try:
            return self._unary(item, t)
        finally:
            if t.kind in ("(", "-") or self.is_kw(t, "NOT"):
                self.depth -= 1

    def _unary(self, item: _Item, t: Token) -> Node:
        negative = item is not self.term_item and self.negative_number()
        if self.is_kw(t, "NOT") or (t.kind == "-" and not negative):
            self.next()
            return Not(self.unary(item))
        if t.kind == "(":
            self.next()
            if self.tok.kind == ")":
                raise self.error(self.tok, "empty parentheses")
            node = self.expression(item)
            if self.tok.kind != ")":
                raise self.error(self.tok, "expected ')' to close the '(' "
                                 f"at column {self.lexer.position(t.start)[1]}")
            self.next()
            return node
        return item()

    def negative_number(self) -> bool:
        """``-3`` where a value is expected is a number, not NOT 3."""
        if self.tok.kind != "-":
            return False
        nxt = self.toks[self.k + 1]
        return (nxt.kind == "word" and nxt.start == self.tok.end
                and _NUMBER.fullmatch(nxt.text) is not None)

    def term(self) -> Node:
        t = self.tok
        if t.kind == "word" and not self.is_kw(t, *_KEYWORDS):
            nxt = self.toks[self.k + 1]
            if nxt.kind == "op":
                return self.comparison()
            if nxt.kind == "(" and nxt.start == t.end:
                raise FilterError(
                    f"Invalid filter: the function {t.text}() at line "
                    f"{self.lexer.position(t.start)[0]}, column "
                    f"{self.lexer.position(t.start)[1]} is not supported by the emulator; "
                    "compare fields instead, e.g. jsonPayload.message:\"text\"")
        if t.kind in ("word", "string"):
            line, col = self.lexer.position(t.start)
            example = t.text if t.kind == "string" else f'"{t.text}"'
            lower = (" (Boolean operators must be upper case: AND, OR, NOT)"
                     if t.text in ("and", "or", "not") else "")
            raise FilterError(
                f"Invalid filter: {t.text} at line {line}, column {col} is a global "
                "restriction (a value searched for in every field), which the emulator does "
                "not support because no index can serve it; compare a field instead, e.g. "
                f"jsonPayload.message:{example}{lower}")
        raise self.error(t, "expected a comparison such as resource.type=\"cloud_tasks_queue\"")

    def comparison(self) -> Node:
        w = self.next()
        line, col = self.lexer.position(w.start)
        path = Path(w.parts, w.text, line, col)
        op_tok = self.next()
        if op_tok.text in ("=~", "!~"):
            raise FilterError(
                f"Invalid filter: regular expressions ({op_tok.text}) at line {line}, column "
                f"{self.lexer.position(op_tok.start)[1]} are not supported by the emulator; "
                "use = or : (has, a case-insensitive substring) instead")
        op: Op = op_tok.text  # type: ignore[assignment]
        if op == ":" and self.tok.kind == "*":
            self.next()
            return Compare(path, op, None)

        def one_value() -> Node:
            return Compare(path, op, self.value())

        if self.tok.kind == "(":
            return self.unary(one_value)  # FIELD OP (v1 OR v2 …): the comparison per value
        return one_value()

    def value(self) -> Value:
        t = self.tok
        if self.negative_number():
            self.next()
            return Value("-" + self.next().text, False)
        if t.kind == "string":
            self.next()
            return Value(t.value, True)
        if t.kind == "word" and not self.is_kw(t, *_KEYWORDS):
            self.next()
            return Value(t.text, False)
        raise self.error(t, "expected a value: a number, a \"quoted string\" or unquoted "
                         "text without spaces or special characters")


_NUMBER = re.compile(r"[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?")


def parse(text: str) -> Node | None:
    """The filter's tree; None for an empty filter (every entry)."""
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"Invalid filter: it has {len(text):,} characters; the maximum is "
                          f"{MAX_FILTER_CHARS:,}")
    return _Parser(text).parse()
