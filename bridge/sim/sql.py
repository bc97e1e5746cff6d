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
        """What `ge_message` holds: the text alone.

        The DBMS sends "<timestamp> <name> <text>"; the OpenAPI strips the
        timestamp and the name (serverErrorText in aip/apierhnd.c), so the
        simulator sends the text only.
        """
        return self.text


# Facility masks (iicommon.h DB_*_ID << 16; gca.h E_GCF_MASK; usererror.h E_US_MASK).
_US = 0x00000
_PS = 0x50000
_QE = 0x60000
_GC = 0xC0000

# name -> (ge_errorCode, SQLSTATE, text). The texts are those of the Ingres
# message files (erqef.msg, erpsf.msg, erusf.msg, ergcf.msg) as the message
# compiler renders them: a line break inside a message becomes a space, a
# written "\n" a newline. {0}, {1}... are the message parameters %0, %1...
CATALOG: dict[str, tuple[int, str, str]] = {
    "E_US0010": (_US | 0x0010, "08004", "Database does not exist: '{0}'."),
    "E_US088F": (
        _US | 0x088F,
        "42000",
        ("{0}: Schema '{1}' does not contain  \ndbevent '{2}' or you lack privileges on that "
        "dbevent \nwhich are required in order to execute this statement."),
    ),
    "E_US09C4": (
        _US | 0x09C4,
        "42000",
        "Syntax error on line {0}.  Last symbol read was: '{1}'.",
    ),
    "E_GC000B": (_GC | 0x000B, "50000", "Login failure: invalid username/password."),
    "E_QE020A": (_QE | 0x020A, "42502", "CREATE DBEVENT: Dbevent '{0}' already exists."),
    "E_QE020B": (
        _QE | 0x020B,
        "42505",
        "DROP DBEVENT: Dbevent '{0}' does not exist or is not owned by you.",
    ),
    "E_QE020C": (
        _QE | 0x020C,
        "42502",
        ("REGISTER DBEVENT: Dbevent '{0}.{1}' is already registered. "
        "This new registration is ignored."),
    ),
    "E_QE020D": (
        _QE | 0x020D,
        "42505",
        # "Dbvent" [sic]: that is the message file's spelling.
        "REMOVE DBEVENT: Dbvent '{0}.{1}' is not registered.  This statement is ignored.",
    ),
    "E_PS0420": (_PS | 0x0420, "42503", "{0}: You may not drop an object owned by '{1}'."),
    "E_PS0421": (_PS | 0x0421, "42503", "{0}: You may not create an object owned by '{1}'."),
    "E_PS0551": (
        _PS | 0x0551,
        "01007",
        ("GRANT: '{0}' on '{1}' owned by '{2}' \nmust have been granted to you WITH GRANT "
        "OPTION in order \nfor you to grant these privilege(s) to other users."),
    ),
    "E_PS0563": (
        _PS | 0x0563,
        "01007",
        ("GRANT ALL [PRIVILEGES]: You may not grant any privileges on \ndbevent '{0}' owned "
        "by '{1}' because \nyou possess no grantable privileges on it."),
    ),
    "E_PS0D35": (
        _PS | 0x0D35,
        "42000",
        ("GRANT/REVOKE: Only REGISTER and RAISE privileges may be associated with \na "
        "DBEVENT.  These privileges may not be associated with any other objects."),
    ),
    "E_PS0D36": (
        _PS | 0x0D36,
        "42000",
        ("RAISE DBEVENT text identified by unquoted name '{0}' \noutside of database "
        "procedure.  The text value must be a quoted string \nor database procedure variable."),
    ),
    "E_PS0D38": (
        _PS | 0x0D38,
        "42000",
        ("RAISE DBEVENT: Invalid word '{0}' in WITH clause \nof statement.  "
        "Only [NO]SHARE is allowed."),
    ),
    "E_PS0D3B": (_PS | 0x0D3B, "42505", "{0}: Dbevent '{1}' does not exist."),
    "E_PS0D3C": (_PS | 0x0D3C, "42503", "{0}: you lack '{1}' on dbevent '{2}' owned by '{3}'."),
}


def ingres_error(name: str, *params: object) -> IngresError:
    """The error `name` of CATALOG with its parameters filled in."""
    code, sqlstate, template = CATALOG[name]
    return IngresError(name, code, sqlstate, template.format(*params))


def syntax_error(symbol: str, line: int = 1) -> IngresError:
    """E_US09C4: the parser met something it does not accept."""
    return ingres_error("E_US09C4", line, symbol)


def unquoted_text(word: str) -> IngresError:
    """E_PS0D36: RAISE DBEVENT text that is a bare name."""
    return ingres_error("E_PS0D36", word)


def bad_with_clause(word: str) -> IngresError:
    """E_PS0D38: RAISE DBEVENT ... WITH something other than [NO]SHARE."""
    return ingres_error("E_PS0D38", word)


def bad_event_privilege() -> IngresError:
    """E_PS0D35: GRANT of something other than REGISTER/RAISE on a dbevent."""
    return ingres_error("E_PS0D35")


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
    grant_all: bool = False  # written as GRANT ALL [PRIVILEGES]


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
        grant_all = "all" in privileges
        if grant_all:
            privileges = {"register", "raise"}
        self.kw("to")
        grantees = [self._grantee()]
        while self.tok.kind == "punct" and self.tok.text == ",":
            self.advance()
            grantees.append(self._grantee())
        return GrantEvent(frozenset(privileges), ref, tuple(grantees), grant_all)

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
            if int(self.tok.text) >= 1 << 63:  # a DECIMAL literal in Ingres: not simulated
                raise self.fail()
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
