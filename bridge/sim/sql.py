"""The statements the DBMS simulator understands, and Ingres' errors for them.

Lexical rules follow Ingres SQL: keywords are case-insensitive; regular
identifiers are folded to lowercase (the default `db_name_case = lower`);
"delimited" identifiers keep their case, `""` standing for one quote; string
literals use `''` for one quote; a trailing semicolon is allowed.

The statement arrives as bytes. It is decoded as UTF-8 with `surrogateescape`
and a string literal is encoded back the same way, so a RAISE DBEVENT text
reaches the events as exactly the bytes the client sent, valid UTF-8 or not.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

# ---------------------------------------------------------------- errors


class IngresError(Exception):
    """One Ingres error as the OpenAPI reports it (ERROR frame)."""

    def __init__(self, name: str, code: int, sqlstate: str, text: str) -> None:
        super().__init__(text)
        self.name = name  # e.g. "E_QE020C"
        self.code = code  # ge_errorCode: facility << 16 | number
        self.sqlstate = sqlstate
        self.text = text

    @property
    def message(self) -> str:
        """The message as an Ingres server formats it: name, text, timestamp line."""
        stamp = time.strftime("%a %b %e %H:%M:%S %Y")
        return f"{self.name} {self.text}\n    ({stamp})"


# Facility masks (iicommon.h DB_*_ID << 16; gca.h E_GCF_MASK; usererror.h E_US_MASK).
_US = 0x00000
_PS = 0x50000
_QE = 0x60000
_GC = 0xC0000


def syntax_error(symbol: str, line: int = 1) -> IngresError:
    """E_US09C4 (erusf.msg): the parser met something it does not accept."""
    return IngresError(
        "E_US09C4",
        _US | 0x09C4,
        "42000",
        f"Syntax error on line {line}.  Last symbol read was: '{symbol}'.",
    )


def database_absent(database: str) -> IngresError:
    """E_US0010 (erusf.msg, SS08004): CONNECT to an unknown database."""
    return IngresError("E_US0010", _US | 0x0010, "08004", f"Database does not exist: '{database}'.")


def login_failed() -> IngresError:
    """E_GC000B (ergcf.msg, SS50000): a remote login with a wrong password."""
    return IngresError(
        "E_GC000B", _GC | 0x000B, "50000", "Login failure: invalid username/password."
    )


def event_exists(name: str) -> IngresError:
    """E_QE020A (erqef.msg): CREATE DBEVENT of an existing one."""
    return IngresError(
        "E_QE020A", _QE | 0x020A, "42502", f"CREATE DBEVENT: Dbevent '{name}' already exists."
    )


def drop_absent(name: str) -> IngresError:
    """E_QE020B (erqef.msg): DROP DBEVENT of one the user does not own."""
    return IngresError(
        "E_QE020B",
        _QE | 0x020B,
        "42505",
        f"DROP DBEVENT: Dbevent '{name}' does not exist or is not owned by you.",
    )


def already_registered(owner: str, name: str) -> IngresError:
    """E_QE020C (erqef.msg): REGISTER of an event already registered."""
    return IngresError(
        "E_QE020C",
        _QE | 0x020C,
        "42502",
        f"REGISTER DBEVENT: Dbevent '{owner}.{name}' is already registered.\n"
        "This new registration is ignored.",
    )


def not_registered(owner: str, name: str) -> IngresError:
    """E_QE020D (erqef.msg): REMOVE of an event not registered (sic "Dbvent")."""
    return IngresError(
        "E_QE020D",
        _QE | 0x020D,
        "42505",
        f"REMOVE DBEVENT: Dbvent '{owner}.{name}' is not registered.  This statement is ignored.",
    )


def event_absent(statement: str, name: str) -> IngresError:
    """E_PS0D3B (erpsf.msg): REGISTER/REMOVE/RAISE/GRANT of a nonexistent event."""
    return IngresError(
        "E_PS0D3B", _PS | 0x0D3B, "42505", f"{statement}: Dbevent '{name}' does not exist."
    )


def missing_privilege(statement: str, privilege: str, name: str, owner: str) -> IngresError:
    """E_PS0D3C (erpsf.msg): the user lacks REGISTER or RAISE on the event."""
    return IngresError(
        "E_PS0D3C",
        _PS | 0x0D3C,
        "42503",
        f"{statement}: you lack '{privilege}' on dbevent '{name}' owned by '{owner}'.",
    )


def illegal_reference(statement: str, name: str, owner: str) -> IngresError:
    """E_PS0D3A (erpsf.msg): e.g. GRANT on a dbevent owned by someone else."""
    return IngresError(
        "E_PS0D3A",
        _PS | 0x0D3A,
        "42503",
        f"{statement}: You may not apply this query to\n dbevent '{name}' owned by '{owner}'.",
    )


def bad_event_privilege() -> IngresError:
    """E_PS0D35 (erpsf.msg): GRANT of something other than REGISTER/RAISE on a dbevent."""
    return IngresError(
        "E_PS0D35",
        _PS | 0x0D35,
        "42000",
        "GRANT/REVOKE: Only REGISTER and RAISE privileges may be associated with\n"
        "a DBEVENT.  These privileges may not be associated with any other objects.",
    )


def unquoted_text(word: str) -> IngresError:
    """E_PS0D36 (erpsf.msg): RAISE DBEVENT text that is a bare name."""
    return IngresError(
        "E_PS0D36",
        _PS | 0x0D36,
        "42000",
        f"RAISE DBEVENT text identified by unquoted name '{word}'\n"
        "outside of database procedure.  The text value must be a quoted string\n"
        "or database procedure variable.",
    )


def bad_with_clause(word: str) -> IngresError:
    """E_PS0D38 (erpsf.msg): RAISE DBEVENT ... WITH something other than [NO]SHARE."""
    return IngresError(
        "E_PS0D38",
        _PS | 0x0D38,
        "42000",
        f"RAISE DBEVENT: Invalid word '{word}' in WITH clause\n"
        "of statement.  Only [NO]SHARE is allowed.",
    )


# ---------------------------------------------------------------- statements


@dataclass(frozen=True, slots=True)
class EventRef:
    """`[owner.]name` as written; owner None when unqualified."""

    owner: str | None
    name: str

    def display(self) -> str:
        """The name as Ingres echoes it in messages."""
        return self.name if self.owner is None else f"{self.owner}.{self.name}"


@dataclass(frozen=True, slots=True)
class CreateEvent:
    """CREATE DBEVENT."""

    ref: EventRef


@dataclass(frozen=True, slots=True)
class DropEvent:
    """DROP DBEVENT."""

    ref: EventRef


@dataclass(frozen=True, slots=True)
class RegisterEvent:
    """REGISTER DBEVENT."""

    ref: EventRef


@dataclass(frozen=True, slots=True)
class RemoveEvent:
    """REMOVE DBEVENT."""

    ref: EventRef


@dataclass(frozen=True, slots=True)
class RaiseEvent:
    """RAISE DBEVENT; `text` is the literal's bytes (None when absent)."""

    ref: EventRef
    text: bytes | None
    share: bool = True


@dataclass(frozen=True, slots=True)
class GrantEvent:
    """GRANT {REGISTER|RAISE|ALL} ON DBEVENT ... TO grantee, ...; 'public' for PUBLIC."""

    privileges: frozenset[str]
    ref: EventRef
    grantees: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EndTransaction:
    """COMMIT or ROLLBACK."""

    commit: bool


@dataclass(frozen=True, slots=True)
class SetAutocommit:
    """SET AUTOCOMMIT ON|OFF."""

    on: bool


@dataclass(frozen=True, slots=True)
class SelectConstant:
    """SELECT <integer>."""

    value: int


@dataclass(frozen=True, slots=True)
class SelectDbmsinfo:
    """SELECT dbmsinfo('request')."""

    request: str


Statement = (
    CreateEvent
    | DropEvent
    | RegisterEvent
    | RemoveEvent
    | RaiseEvent
    | GrantEvent
    | EndTransaction
    | SetAutocommit
    | SelectConstant
    | SelectDbmsinfo
)

# ---------------------------------------------------------------- lexer

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|--[^\n]*|/\*.*?\*/)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_#@$]*)
  | (?P<delim>"(?:[^"]|"")*")
  | (?P<string>'(?:[^']|'')*')
  | (?P<number>[0-9]+)
  | (?P<punct>[.,;()*=<>+\-/])
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical token; `text` is the folded/unquoted value, `raw` as written."""

    kind: str  # ident, delim, string, number, punct, eof
    text: str
    raw: str
    line: int = 1


def tokenize(sql: str) -> list[Token]:
    """Split a statement into tokens (ending with an `eof` token)."""
    tokens: list[Token] = []
    pos = 0
    line = 1
    while pos < len(sql):
        m = _TOKEN.match(sql, pos)
        if m is None:
            raise syntax_error(sql[pos], line)
        pos = m.end()
        kind = m.lastgroup or "ws"
        raw = m.group()
        if kind != "ws":
            tokens.append(Token(kind, _value(kind, raw), raw, line))
        line += raw.count("\n")
    tokens.append(Token("eof", "", "", line))
    return tokens


def _value(kind: str, raw: str) -> str:
    if kind == "ident":
        return raw.lower()
    if kind == "delim":
        return raw[1:-1].replace('""', '"')
    if kind == "string":
        return raw[1:-1].replace("''", "'")
    return raw


# ---------------------------------------------------------------- parser


class _Parser:
    """Recursive descent over the token list; errors name the offending symbol."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def fail(self) -> IngresError:
        # At the end of the text Ingres reports the last symbol it read.
        tok = self.tok
        if tok.kind == "eof" and self.pos > 0:
            tok = self.tokens[self.pos - 1]
        return syntax_error(tok.raw, tok.line)

    def advance(self) -> Token:
        tok = self.tok
        self.pos += 1
        return tok

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind == "ident" and self.tok.text in words

    def kw(self, *words: str) -> str:
        if not self.is_kw(*words):
            raise self.fail()
        return self.advance().text

    def punct(self, sym: str) -> None:
        if self.tok.kind != "punct" or self.tok.text != sym:
            raise self.fail()
        self.advance()

    def name(self) -> str:
        if self.tok.kind not in ("ident", "delim") or not self.tok.text:
            raise self.fail()
        return self.advance().text

    def event_ref(self) -> EventRef:
        first = self.name()
        if self.tok.kind == "punct" and self.tok.text == ".":
            self.advance()
            return EventRef(first, self.name())
        return EventRef(None, first)

    def end(self) -> None:
        if self.tok.kind == "punct" and self.tok.text == ";":
            self.advance()
        if self.tok.kind != "eof":
            raise self.fail()

    def statement(self) -> Statement:
        if self.tok.kind != "ident":
            raise self.fail()
        handler = _STATEMENTS.get(self.tok.text)
        if handler is None:
            raise self.fail()
        self.advance()
        stmt = handler(self)
        self.end()
        return stmt

    def _create(self) -> Statement:
        self.kw("dbevent")
        return CreateEvent(self.event_ref())

    def _drop(self) -> Statement:
        self.kw("dbevent")
        return DropEvent(self.event_ref())

    def _register(self) -> Statement:
        self.kw("dbevent")
        return RegisterEvent(self.event_ref())

    def _remove(self) -> Statement:
        self.kw("dbevent")
        return RemoveEvent(self.event_ref())

    def _raise(self) -> Statement:
        self.kw("dbevent")
        ref = self.event_ref()
        text: bytes | None = None
        if self.tok.kind == "string":
            text = self.advance().text.encode("utf-8", "surrogateescape")
        elif self.tok.kind in ("ident", "delim") and not self.is_kw("with"):
            raise unquoted_text(self.tok.text)
        share = True
        if self.is_kw("with"):
            self.advance()
            if not self.is_kw("share", "noshare"):
                if self.tok.kind == "eof":
                    raise self.fail()
                raise bad_with_clause(self.tok.raw)
            share = self.advance().text == "share"
        return RaiseEvent(ref, text, share)

    def _grant(self) -> Statement:
        privileges = {self._privilege()}
        while self.tok.kind == "punct" and self.tok.text == ",":
            self.advance()
            privileges.add(self._privilege())
        self.kw("on")
        self.kw("dbevent")
        ref = self.event_ref()
        if privileges - {"register", "raise", "all"}:
            raise bad_event_privilege()
        if "all" in privileges:
            privileges = {"register", "raise"}
        self.kw("to")
        grantees = [self._grantee()]
        while self.tok.kind == "punct" and self.tok.text == ",":
            self.advance()
            grantees.append(self._grantee())
        return GrantEvent(frozenset(privileges), ref, tuple(grantees))

    def _privilege(self) -> str:
        word = self.kw(
            "register",
            "raise",
            "all",
            "select",
            "insert",
            "update",
            "delete",
            "execute",
            "references",
            "copy_into",
            "copy_from",
            "next",
        )
        if word == "all" and self.is_kw("privileges"):
            self.advance()
        return word

    def _grantee(self) -> str:
        # PUBLIC is a keyword; "public" in quotes would be a user of that name,
        # which Ingres does not allow either, so both mean everybody here.
        return self.name()

    def _commit(self) -> Statement:
        if self.is_kw("work"):
            self.advance()
        return EndTransaction(commit=True)

    def _rollback(self) -> Statement:
        if self.is_kw("work"):
            self.advance()
        return EndTransaction(commit=False)

    def _set(self) -> Statement:
        self.kw("autocommit")
        return SetAutocommit(self.kw("on", "off") == "on")

    def _select(self) -> Statement:
        if self.tok.kind == "number":
            return SelectConstant(int(self.advance().text))
        self.kw("dbmsinfo")
        self.punct("(")
        if self.tok.kind != "string":
            raise self.fail()
        request = self.advance().text
        self.punct(")")
        return SelectDbmsinfo(request)


_STATEMENTS: dict[str, Callable[[_Parser], Statement]] = {
    "create": _Parser._create,
    "drop": _Parser._drop,
    "register": _Parser._register,
    "remove": _Parser._remove,
    "raise": _Parser._raise,
    "grant": _Parser._grant,
    "commit": _Parser._commit,
    "rollback": _Parser._rollback,
    "set": _Parser._set,
    "select": _Parser._select,
}


def parse(sql: bytes | str) -> Statement:
    """Parse one statement; raises IngresError (E_US09C4) when it is not one we know."""
    text = sql.decode("utf-8", "surrogateescape") if isinstance(sql, bytes) else sql
    return _Parser(tokenize(text)).statement()
