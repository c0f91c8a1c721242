"""Plain-language meaning of SMTP reply codes and RFC 3463 enhanced status codes.

People reading a probe's transcript mostly know ``250``; everything else sends them to a search
engine. These are short explanations in the exporter's own words, aimed at "what does it mean
for me, and what do I check next".
"""

from __future__ import annotations

_REPLY_CODES = {
    220: "the server is ready",
    221: "the server is closing the connection (the normal answer to QUIT)",
    235: "authentication succeeded",
    250: "accepted",
    251: "accepted; the recipient is elsewhere and the server will forward the mail",
    252: "the server cannot check this recipient now but will accept the mail and try to deliver it",
    334: "the server waits for the next part of the authentication exchange",
    354: "the server waits for the message itself, ended by a line holding a single dot",
    421: "the server is not taking connections right now and is closing this one (overloaded, in maintenance, "
         "or limiting connections from your address); a real sender would retry later",
    450: "the mailbox cannot be used right now (busy or locked) or the server is greylisting you: "
         "a first attempt from an unknown sender is refused on purpose and accepted on a retry minutes later",
    451: "the server hit a problem of its own while handling the command (often a failed DNS or "
         "anti-spam lookup); temporary",
    452: "the server is short of storage right now, or this transaction has too many recipients; temporary",
    454: "TLS (or authentication) is unavailable right now because of a problem on the server; temporary",
    455: "the server cannot handle the command's parameters right now; temporary",
    500: "the server did not understand the command: a typo, a line that is too long, or a command this "
         "server does not know (\"unrecognised command\" for `rcpt to:` usually means the command was mistyped, "
         "e.g. a space before the colon, or sent outside a mail transaction)",
    501: "the command's arguments are malformed: write addresses as <user@example.com> with nothing after "
         "the closing bracket unless the server advertised that extension",
    502: "this server does not implement that command",
    503: "commands in the wrong order: EHLO/HELO comes first, then MAIL FROM, then RCPT TO, then DATA "
         "(or the server requires STARTTLS or AUTH before this command)",
    504: "the server does not implement a parameter of this command (e.g. that AUTH mechanism)",
    521: "this host never accepts mail",
    530: "authentication (or STARTTLS first) is required before this command",
    534: "the authentication mechanism is too weak for this server's policy",
    535: "authentication failed: wrong user name or password, or the account may not log in this way",
    538: "this authentication mechanism is only allowed over an encrypted connection",
    550: "the mailbox is unavailable: it does not exist, or the server refuses it by policy (for example "
         "relaying to another domain is not allowed from your address); permanent",
    551: "the recipient is not local and the server will not forward to it",
    552: "the message is too big for the server or the mailbox is over its quota",
    553: "the mailbox name is not allowed (malformed address, or a sender address this server rejects)",
    554: "the transaction failed; as a greeting it means the server will not talk to you at all, most often "
         "because your IP address is on a block list or has a poor reputation",
    555: "the server does not recognise the parameters given with MAIL FROM or RCPT TO",
    556: "the recipient's domain does not accept mail",
}

_CLASSES = {
    "2": "success",
    "4": "temporary failure (retrying later may work)",
    "5": "permanent failure (retrying unchanged will fail again)",
}
_FIRST_DIGIT = {
    "2": "the command succeeded",
    "3": "the server waits for more input",
    "4": "temporary failure: the same command may work later",
    "5": "permanent failure: the same command will fail again",
}

_SUBJECTS = {
    "0": "other",
    "1": "addressing",
    "2": "mailbox",
    "3": "mail system",
    "4": "network and routing",
    "5": "mail protocol",
    "6": "message content",
    "7": "security or policy",
}

_DETAILS = {
    "0.0": "no further detail given",
    "1.0": "a problem with an address",
    "1.1": "the mailbox does not exist at the destination (check the spelling of the local part)",
    "1.2": "the destination domain does not exist or does not accept mail",
    "1.3": "the recipient address is syntactically wrong",
    "1.4": "the address is ambiguous: it matches more than one mailbox",
    "1.5": "the recipient address is valid",
    "1.6": "the mailbox has moved and no forwarding address is known",
    "1.7": "the sender address is syntactically wrong",
    "1.8": "the sender's domain is wrong or does not exist (no DNS records for it)",
    "1.10": "the recipient's domain publishes a null MX: it takes no mail",
    "2.0": "a problem with the mailbox",
    "2.1": "the mailbox is disabled and does not take messages",
    "2.2": "the mailbox is full",
    "2.3": "the message is larger than this mailbox accepts",
    "2.4": "expanding a mailing list failed",
    "3.0": "a problem with the receiving mail system",
    "3.1": "the mail system is out of storage",
    "3.2": "the mail system does not take messages now (shutting down or in maintenance)",
    "3.3": "the mail system does not support a feature the message needs",
    "3.4": "the message is larger than the mail system accepts",
    "3.5": "the mail system is misconfigured",
    "4.0": "a network or routing problem",
    "4.1": "the next host did not answer",
    "4.2": "the connection to the next host broke",
    "4.3": "a directory lookup failed (usually DNS): the server could not resolve a name it needed",
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
    "7.0": "a security or policy matter (after AUTH it means authentication succeeded)",
    "7.1": "rejected by policy: the server does not accept this from your address or IP (a block list or bad "
           "reputation, relaying denied, or a sender it does not trust)",
    "7.2": "expanding this mailing list is not allowed",
    "7.3": "a security conversion was required but is not possible",
    "7.4": "a required security feature is not supported",
    "7.5": "a cryptographic operation failed",
    "7.6": "a cryptographic algorithm is not supported",
    "7.7": "the message failed an integrity check",
    "7.8": "the credentials are wrong (user name or password)",
    "7.9": "the authentication mechanism is too weak",
    "7.10": "encryption is required (use STARTTLS first)",
    "7.11": "this authentication mechanism needs an encrypted connection",
    "7.12": "the password must be changed before logging in again",
    "7.13": "the account is disabled",
    "7.14": "a trust relationship is required",
    "7.20": "no valid DKIM signature was found",
    "7.23": "the sender's SPF record does not allow your IP address to send for this domain",
    "7.24": "the sender's SPF record could not be evaluated",
    "7.25": "your IP address has no matching reverse DNS (PTR) record",
    "7.26": "several sender authentication checks failed",
    "7.27": "the sender's domain publishes a null MX, so it cannot receive replies",
}


def explain_code(code: int) -> str:
    """What a basic three-digit reply code means."""
    text = str(code)
    known = _REPLY_CODES.get(code)
    if known is not None:
        return known
    return _FIRST_DIGIT.get(text[0], "not a valid SMTP reply code")


def explain_enhanced(status: str) -> str:
    """What an RFC 3463 status such as ``5.7.1`` means: its class, subject and detail."""
    klass, subject, detail = status.split(".")
    what = _DETAILS.get(f"{subject}.{detail}")
    if what is None:
        what = f"{_SUBJECTS.get(subject, 'unknown')} problem, detail {detail}"
    return f"{_CLASSES.get(klass, 'unknown class')}: {what}"


def explain(code: int, enhanced: str | None) -> str:
    """One line for a person: ``554 5.7.1`` -> the code's meaning, then the enhanced code's."""
    line = explain_code(code)
    if enhanced:
        line += f"; {enhanced}: {explain_enhanced(enhanced)}"
    return line
