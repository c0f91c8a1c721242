"""What an SMTP reply means, for the stage it answered, in plain words.

An explanation is built from three parts, each from its own RFC, and never borrows words from
another stage (a ``554`` at RCPT is not explained "as a greeting"):

- the **basic code** for the command it answered: RFC 5321 section 4.2 (and 4.3.2, which codes each
  command may get), RFC 3207 for STARTTLS, RFC 4954 for AUTH, RFC 7504 for ``521``/``556``;
- the **enhanced code** ``class.subject.detail`` (RFC 3463, IANA's registry): the class says how it went
  (``2`` success, ``4`` temporary, ``5`` permanent), the subject and detail what it concerns; a class 2
  code is a success *about* that subject, never "a problem";
- the **server's own text**, quoted beside them (not interpreted, except for two things no code says:
  greylisting, and which party a rejection names — see ``refused_party``).

What was refused (``Party``) comes first from the server's words where real MTAs use fixed phrases
(Postfix's "Client host rejected", "Relay access denied"; Exim's "relay not permitted"; Microsoft's
"banned sending IP"), then from the enhanced code, and only then from the stage: Postfix's default
``smtpd_delay_reject = yes`` answers a *client* block at RCPT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Party(StrEnum):
    """What a rejection refused."""

    CLIENT = "client"  # this client: its IP address, reverse DNS, EHLO name, reputation (block lists)
    SENDER = "sender"  # the MAIL FROM address
    RECIPIENT = "recipient"  # the RCPT TO address (unknown user, full mailbox)
    RELAY = "relay"  # relaying: the recipient's domain is not one this server accepts mail for
    POLICY = "policy"  # a security/policy decision the reply does not attribute further
    MESSAGE = "message"  # the message (content, size)
    AUTH = "auth"  # the credentials or mechanism
    TLS = "tls"  # encryption
    SERVICE = "service"  # the server itself (busy, shutting down, out of storage, local error)
    COMMAND = "command"  # the command's syntax or sequence


# --- basic reply codes -------------------------------------------------------------------------
# Meanings valid at any stage (RFC 5321 4.2.2/4.2.3 wording), without naming any command.
_CODES = {
    220: "service ready",
    221: "the server is closing the connection",
    235: "authentication succeeded (RFC 4954)",
    250: "requested action completed",
    251: "the user is not local; the server will forward the mail",
    252: "the server cannot verify the user but will accept the message and attempt delivery",
    334: "the server waits for the next part of the authentication exchange (RFC 4954)",
    354: "start mail input: the server waits for the message, ended by a line holding only a dot",
    421: "service not available: the server is closing this connection (shutting down, overloaded, or limiting "
    "connections from this client); temporary",
    450: "action not taken: mailbox unavailable (e.g. busy or temporarily blocked by policy); temporary",
    451: "action aborted: local error in processing on the server; temporary",
    452: "action not taken: insufficient system storage; temporary",
    454: "temporary failure on the server",
    455: "the server cannot accommodate the command's parameters now; temporary",
    500: "syntax error, command unrecognised (or the command line is too long)",
    501: "syntax error in the command's parameters or arguments",
    502: "command not implemented",
    503: "bad sequence of commands: the server did not expect this command at this point",
    504: "command parameter not implemented",
    521: "this host does not accept mail (RFC 7504)",
    530: "the server requires authentication or encryption before this command (RFC 4954, RFC 3207)",
    534: "the authentication mechanism is too weak for this server (RFC 4954)",
    535: "authentication credentials invalid (RFC 4954)",
    538: "this authentication mechanism needs an encrypted connection (RFC 4954)",
    550: "action not taken: mailbox unavailable (not found, no access) or refused for policy reasons; permanent",
    551: "the user is not local and the server will not forward",
    552: "action aborted: exceeded storage allocation (message too big, or mailbox over quota)",
    553: "action not taken: mailbox name not allowed (bad address syntax, or refused by policy)",
    554: "transaction failed; permanent",
    555: "the command's parameters are not recognised or not implemented",
    556: "the domain does not accept mail (RFC 7504)",
}
# Meanings that depend on the command answered. Each names only its own stage.
_STAGE_CODES = {
    "banner": {
        220: "the server is ready to talk (service ready)",
        421: "the server will not serve this connection now and closes it (busy, in maintenance, or limiting "
        "connections from this client's address); temporary",
        554: "the server refuses this connection: no SMTP service for this client (RFC 5321 section 3.1); permanent",
        521: "this host never accepts mail (RFC 7504)",
    },
    "ehlo": {
        250: "the server accepted the client's introduction and listed its extensions",
        501: "the name given is not acceptable (syntax)",
        502: "this server does not implement the extended introduction (ESMTP)",
        550: "the server refuses this introduction: often the name given, or the client's address",
    },
    "helo": {
        250: "the server accepted the client's introduction",
        501: "the name given is not acceptable (syntax)",
        550: "the server refuses this introduction: often the name given, or the client's address",
    },
    "starttls": {
        220: "ready to start TLS (RFC 3207)",
        454: "TLS not available due to a temporary reason (RFC 3207): the server could not set up TLS, "
        "usually a certificate or key problem on its side",
        501: "syntax error: this command takes no parameters (RFC 3207)",
        502: "this server does not implement TLS",
    },
    "auth": {
        454: "temporary authentication failure on the server (RFC 4954)",
        504: "this authentication mechanism is not supported (RFC 4954)",
        501: "the authentication exchange was malformed or cancelled (RFC 4954)",
        500: "an authentication exchange line was too long (RFC 4954)",
        503: "bad sequence: already authenticated, or authentication is not allowed at this point",
    },
    "mail": {
        250: "the sender address is accepted",
        450: "the sender address is not accepted right now; temporary",
        550: "the sender address is refused; permanent",
        553: "the sender address is not allowed (bad syntax, or refused by policy)",
        552: "the declared message size exceeds the server's limit",
        555: "the parameters of this command are not recognised or not implemented",
    },
    "rcpt": {
        250: "the recipient is accepted",
        450: "the recipient's mailbox is unavailable right now (busy, or temporarily refused by policy); temporary",
        452: "insufficient system storage, or too many recipients in this transaction; temporary",
        550: "the recipient's mailbox is unavailable (not found, no access) or the address is refused for policy "
        "reasons; permanent",
        551: "the recipient is not local and the server will not forward to it",
        553: "the recipient's address is not allowed (bad syntax, or refused by policy)",
        554: "the command was refused (transaction failed); permanent",
        555: "the parameters of this command are not recognised or not implemented",
        556: "the recipient's domain does not accept mail (RFC 7504)",
    },
    "rset": {250: "the transaction was reset"},
    "data": {554: "no valid recipients, or the server refuses to take a message now; permanent"},
    "message": {
        250: "the message was accepted for delivery",
        450: "the message was not accepted right now; temporary",
        550: "the message was refused; permanent",
        552: "the message is too big (exceeded storage allocation)",
        554: "the message was refused (transaction failed); permanent",
    },
    "quit": {221: "the server is closing the connection (the normal answer)"},
}
# Likely causes, where the code alone does not decide (said as causes that remain, not as the meaning).
_CAUSES = {
    ("banner", 554): "usual causes: this client's address is on a block list or has a poor reputation, or the "
    "server takes no mail from outside",
    ("banner", 421): "usual causes: too many connections (from this address or in total), or maintenance",
}
_FIRST_DIGIT = {
    "2": "the command succeeded",
    "3": "the server waits for more input",
    "4": "temporary failure: the same command may work later",
    "5": "permanent failure: the same command will fail again",
}

# --- RFC 3463 enhanced status codes ----------------------------------------------------------------
_CLASSES = {
    "2": "success",
    "4": "temporary failure (a retry may succeed)",
    "5": "permanent failure (the same attempt will fail again)",
}
_SUBJECTS = {
    "0": "other",
    "1": "addressing",
    "2": "the mailbox",
    "3": "the mail system",
    "4": "network and routing",
    "5": "the mail protocol",
    "6": "the message content",
    "7": "security or policy",
}
# Success details that say more than "success".
_SUCCESS = {
    "1.5": "the destination address is valid",
    "7.0": "security status fine (after authentication: authenticated, RFC 4954)",
}
# Failure details (RFC 3463 and later registrations: RFC 4954, 5248, 6530, 7372, 7505).
_DETAILS = {
    "0.0": "no further detail given",
    "1.0": "an address problem",
    "1.1": "the mailbox does not exist at the destination",
    "1.2": "the destination system does not exist or does not accept mail",
    "1.3": "the destination address is syntactically wrong",
    "1.4": "the destination address is ambiguous (matches several mailboxes)",
    "1.6": "the mailbox has moved and no forwarding address is known",
    "1.7": "the sender address is syntactically wrong",
    "1.8": "the sender's system address is invalid (its domain does not exist or takes no mail)",
    "1.9": "the message was relayed to a system outside SMTP",
    "1.10": "the recipient's domain publishes a null MX: it takes no mail (RFC 7505)",
    "2.0": "a mailbox problem",
    "2.1": "the mailbox is disabled and does not take messages",
    "2.2": "the mailbox is full",
    "2.3": "the message is larger than this mailbox accepts",
    "2.4": "expanding a mailing list failed",
    "3.0": "a problem with the receiving mail system",
    "3.1": "the mail system is out of storage",
    "3.2": "the mail system does not take messages now (shutting down, maintenance, or load)",
    "3.3": "the mail system does not support a feature the message needs",
    "3.4": "the message is larger than the mail system accepts",
    "3.5": "the mail system is misconfigured",
    "4.0": "a network or routing problem",
    "4.1": "the next host did not answer",
    "4.2": "the connection to the next host broke",
    "4.3": "a directory or routing lookup failed (usually DNS) on the server's side",
    "4.4": "no route to the destination could be found",
    "4.5": "the mail system is congested",
    "4.6": "a routing loop was detected",
    "4.7": "the message waited too long and expired",
    "5.0": "a protocol problem",
    "5.1": "the command is not valid here",
    "5.2": "the command has a syntax error",
    "5.3": "too many recipients",
    "5.4": "the command's arguments are not valid",
    "5.5": "wrong protocol version",
    "5.6": "an authentication exchange line was too long",
    "6.0": "a problem with the message content",
    "6.1": "the content type is not supported",
    "6.2": "the content would need a conversion that is not allowed",
    "6.3": "the content would need a conversion that is not supported",
    "6.4": "the content was converted with some loss",
    "6.5": "converting the content failed",
    "6.6": "the content is not accepted now",
    "6.7": "non-ASCII addresses are not allowed without SMTPUTF8",
    "7.0": "a security or policy reason not specified further",
    "7.1": "not authorized: the server's policy refuses this (per-host, per-sender or per-recipient filtering)",
    "7.2": "expanding this mailing list is not allowed",
    "7.3": "a security conversion was required but is not possible",
    "7.4": "a required security feature is not supported",
    "7.5": "a cryptographic operation failed",
    "7.6": "a cryptographic algorithm is not supported",
    "7.7": "the message failed an integrity check",
    "7.8": "the credentials are invalid (user name or password)",
    "7.9": "the authentication mechanism is too weak",
    "7.10": "encryption is required",
    "7.11": "this authentication mechanism needs an encrypted connection",
    "7.12": "the password must be changed",
    "7.13": "the account is disabled",
    "7.14": "a trust relationship is required",
    "7.15": "the priority level is too low",
    "7.16": "the message is too big for this priority",
    "7.17": "the mailbox owner has changed",
    "7.18": "the domain owner has changed",
    "7.19": "an RRVS test cannot be completed",
    "7.20": "no passing DKIM signature was found",
    "7.21": "no acceptable DKIM signature was found",
    "7.22": "no valid author-matched DKIM signature was found",
    "7.23": "the sender's SPF record does not allow this client's address to send for that domain",
    "7.24": "the sender's SPF record could not be evaluated",
    "7.25": "this client's address has no matching reverse DNS (PTR) record",
    "7.26": "several sender authentication checks failed",
    "7.27": "the sender's domain publishes a null MX, so it cannot receive replies (RFC 7505)",
}

# --- the server's words ------------------------------------------------------------------------------
# Greylisting has no reply code of its own: a 4xx plus the server's words is the only evidence.
_GREYLISTING = re.compile(r"gr[ae]y[ -]?list", re.IGNORECASE)
# Fixed phrases of real MTAs naming what they refused: first the exact prefixes (Postfix's
# "<what> rejected:", Exim's and Microsoft's fixed texts), then looser words.
_PARTY_PREFIXES = (
    (
        Party.CLIENT,
        re.compile(
            r"client host (\[[^\]]*\] )?(rejected|blocked)|helo command rejected|"
            r"banned sending ip|traffic not accepted from this ip",
            re.IGNORECASE,
        ),
    ),
    (Party.SENDER, re.compile(r"sender address rejected|sender verify failed", re.IGNORECASE)),
    (
        Party.RECIPIENT,
        re.compile(
            r"recipient address rejected|recipient not found|user unknown|unknown user|"
            r"no such user",
            re.IGNORECASE,
        ),
    ),
    (
        Party.RELAY,
        re.compile(
            r"relay(ing)? (access )?(denied|not permitted|prohibited|not allowed)|"
            r"unable to relay|not permitted to relay|relay not permitted",
            re.IGNORECASE,
        ),
    ),
    (
        Party.TLS,
        re.compile(r"must issue a starttls|starttls (command )?(is )?required|encryption required", re.IGNORECASE),
    ),
    (Party.AUTH, re.compile(r"authentication required|not authenticated", re.IGNORECASE)),
)
_PARTY_WORDS = (
    (
        Party.CLIENT,
        re.compile(
            r"blocked using|(is|are) (listed )?(in|on) (a |the )?(black|block|deny)\s?list|"
            r"(black|block)listed|\bdnsbl\b|\brbl\b|reverse (dns|hostname)|"
            r"cannot find your hostname|your (ip|ip address|host)\b",
            re.IGNORECASE,
        ),
    ),
    (
        Party.SENDER,
        re.compile(r"\bspf\b|unverifiable sender|sender .*(denied|refused)|send as this sender", re.IGNORECASE),
    ),
    (Party.RECIPIENT, re.compile(r"mailbox (unavailable|not found|full)|does not exist", re.IGNORECASE)),
)
# Enhanced subject.detail -> what was refused (when the words do not say).
_DETAIL_PARTY = {
    "1.1": Party.RECIPIENT,
    "1.2": Party.RECIPIENT,
    "1.3": Party.RECIPIENT,
    "1.4": Party.RECIPIENT,
    "1.6": Party.RECIPIENT,
    "1.10": Party.RECIPIENT,
    "2.1": Party.RECIPIENT,
    "2.2": Party.RECIPIENT,
    "2.3": Party.MESSAGE,
    "3.4": Party.MESSAGE,
    "1.7": Party.SENDER,
    "1.8": Party.SENDER,
    "7.23": Party.SENDER,
    "7.24": Party.SENDER,
    "7.26": Party.SENDER,
    "7.27": Party.SENDER,
    "7.25": Party.CLIENT,
    "7.8": Party.AUTH,
    "7.9": Party.AUTH,
    "7.11": Party.AUTH,
    "7.12": Party.AUTH,
    "7.13": Party.AUTH,
    "7.10": Party.TLS,
}
_SUBJECT_PARTY = {"3": Party.SERVICE, "4": Party.SERVICE, "5": Party.COMMAND, "6": Party.MESSAGE, "7": Party.POLICY}
_STAGE_PARTY = {
    "banner": Party.CLIENT,
    "ehlo": Party.CLIENT,
    "helo": Party.CLIENT,
    "starttls": Party.TLS,
    "auth": Party.AUTH,
    "mail": Party.SENDER,
    "rcpt": Party.RECIPIENT,
    "data": Party.MESSAGE,
    "message": Party.MESSAGE,
}
_PARTY_WORDING = {
    Party.CLIENT: "the server refuses this client (its address, host name, the name it introduced itself with, "
    "or reputation such as a block list listing), not a particular message or address",
    Party.SENDER: "the server refuses the sender address",
    Party.RECIPIENT: "the server refuses the recipient address",
    Party.RELAY: "relaying denied: this server does not accept mail for the recipient's domain from this client",
    Party.POLICY: "refused by the server's policy",
    Party.MESSAGE: "the server refuses the message",
    Party.AUTH: "the server refuses the credentials",
    Party.TLS: "the server requires or refuses encryption",
    Party.SERVICE: "a problem on the server's side",
    Party.COMMAND: "the server refuses the command as sent",
}
GREYLISTING_ADVICE = (
    "greylisting: the server defers the first attempt from an unknown sender on purpose; "
    "retry later: mail will be accepted after the delay"
)


def is_greylisting(code: int, text: str) -> bool:
    """A temporary reply whose own words say greylisting (no code says it)."""
    return 400 <= code < 500 and _GREYLISTING.search(text) is not None


def refused_party(stage: str, code: int, enhanced: str | None, text: str) -> Party | None:
    """What a 4xx/5xx reply refused: the server's words first, then the enhanced code, then the stage."""
    if code < 400:
        return None
    party = _party(stage, code, enhanced, text)
    if party is Party.RECIPIENT and stage == "mail":  # an address refused at MAIL FROM is the sender's
        return Party.SENDER
    return party


def _party(stage: str, code: int, enhanced: str | None, text: str) -> Party | None:
    for party, words in _PARTY_PREFIXES:
        if words.search(text):
            return party
    if code in (421, 452) or (code == 451 and not enhanced):
        return Party.SERVICE
    if code in (500, 501, 502, 503, 504, 555):
        return Party.TLS if stage == "starttls" else Party.AUTH if stage == "auth" else Party.COMMAND
    subject = None
    if enhanced:
        _, subject, detail = enhanced.split(".")
        by_detail = _DETAIL_PARTY.get(f"{subject}.{detail}")
        if by_detail is not None:
            return by_detail
    for party, words in _PARTY_WORDS:
        if words.search(text):
            return party
    if subject is not None:
        if stage in ("banner", "ehlo", "helo") and subject == "7":
            return Party.CLIENT
        if subject in _SUBJECT_PARTY and not (subject == "7" and stage in ("auth", "starttls")):
            return _SUBJECT_PARTY[subject]
    if code in (521, 556):
        return Party.SERVICE if stage == "banner" else Party.RECIPIENT
    return _STAGE_PARTY.get(stage)


def explain_code(stage: str, code: int) -> str:
    """What a basic three-digit code means as the answer to ``stage``."""
    known = _STAGE_CODES.get(stage, {}).get(code)
    if known is not None:
        return known
    if stage == "banner" and code >= 400:
        kind = "temporary" if code < 500 else "permanent"
        return f"the server refuses to serve this connection; {kind}"
    known = _CODES.get(code)
    if known is not None:
        return known
    return _FIRST_DIGIT.get(str(code)[0], "not a valid SMTP reply code")


def explain_enhanced(status: str) -> str:
    """What an RFC 3463 status such as ``5.7.1`` means: its class, then what it concerns."""
    klass, subject, detail = status.split(".")
    key = f"{subject}.{detail}"
    if klass == "2":
        about = _SUCCESS.get(key)
        if about:
            return f"success: {about}"
        return "success" if subject == "0" else f"success (concerning {_SUBJECTS.get(subject, 'other')})"
    what = _DETAILS.get(key)
    if what is None:
        what = (
            f"detail {detail} concerning {_SUBJECTS.get(subject, 'an unknown subject')} (a code outside the "
            "IANA registry: the server's own)"
        )
    return f"{_CLASSES.get(klass, 'unknown class')}: {what}"


@dataclass(frozen=True, slots=True)
class Explanation:
    stage: str
    code: int
    enhanced: str | None
    code_meaning: str
    enhanced_meaning: str | None
    refused: Party | None  # for 4xx/5xx: what the server refused
    greylisting: bool
    server_text: str  # the server's own words (first line after the codes), for quoting

    @property
    def meaning(self) -> str:
        """The explanation without the server's words: code, enhanced code, what was refused, advice."""
        parts = [self.code_meaning]
        causes = _CAUSES.get((self.stage, self.code))
        if causes is not None:
            parts.append(causes)
        if self.enhanced:
            parts.append(f"{self.enhanced}: {self.enhanced_meaning}")
        if self.greylisting:
            parts.append(GREYLISTING_ADVICE)
        elif (named := self._named_party()) is not None:
            parts.append(_PARTY_WORDING[named])
        return "; ".join(parts)

    def _named_party(self) -> Party | None:
        """What was refused, to be said when the stage alone does not say it (a client refused at RCPT)."""
        refused = self.refused
        if refused is None or self.greylisting:
            return None
        if refused is not _STAGE_PARTY.get(self.stage):
            return refused
        return refused if refused is Party.RELAY or (refused is Party.CLIENT and self.stage != "banner") else None

    @property
    def summary(self) -> str:
        """One short line for a verdict: the code's meaning, the enhanced code's detail when it is specific,
        and what was refused when the stage alone does not say it."""
        parts = [self.code_meaning]
        if self.enhanced and self.code >= 400:
            _, subject, detail = self.enhanced.split(".")
            specific = _DETAILS.get(f"{subject}.{detail}")
            if specific is not None and detail != "0" and f"{subject}.{detail}" != "7.1":
                parts.append(specific)
        if self.greylisting:
            parts.append(GREYLISTING_ADVICE)
        elif (named := self._named_party()) is not None:
            parts.append(_PARTY_WORDING[named])
        return "; ".join(parts)

    def line(self) -> str:
        """The full explanation with the server's words quoted beside it."""
        said = f" The server said: {self.server_text!r}" if self.server_text else ""
        return f"{self.meaning}.{said}"


def explain(stage: str, code: int, enhanced: str | None, text: str = "") -> Explanation:
    """Explain ``code`` (and ``enhanced``) as the answer to ``stage``, given the server's ``text``."""
    words = text
    if enhanced and words.startswith(enhanced):
        words = words[len(enhanced) :].lstrip()
    return Explanation(
        stage=stage,
        code=code,
        enhanced=enhanced,
        code_meaning=explain_code(stage, code),
        enhanced_meaning=explain_enhanced(enhanced) if enhanced else None,
        refused=refused_party(stage, code, enhanced, text),
        greylisting=is_greylisting(code, text),
        server_text=words[:300],
    )
