"""Typed ISAKMP errors.

Every error names the Notify Message Type a receiver should answer with
(``notify``) and the Notification Data to put into that Notify (``data``).
Decoders in this package raise only subclasses of :class:`IsakmpError`.
"""

from __future__ import annotations

from .doi import NotifyType

__all__ = [
    "notify_reason",
    "IsakmpError",
    "PayloadMalformed",
    "InvalidPayloadType",
    "DoiNotSupported",
    "SituationNotSupported",
    "InvalidCookie",
    "InvalidMajorVersion",
    "InvalidMinorVersion",
    "InvalidExchangeType",
    "InvalidFlags",
    "InvalidMessageId",
    "InvalidProtocolId",
    "InvalidSpi",
    "InvalidTransformId",
    "AttributesNotSupported",
    "NoProposalChosen",
    "BadProposalSyntax",
    "InvalidKeyInformation",
    "InvalidIdInformation",
    "UnequalPayloadLengths",
]


def notify_reason(notify: int | str) -> str:
    """Stable lower-case name of a Notify Message Type for metric labels and ``reason``
    fields: ``no-proposal-chosen`` for 14 (or ``"NO_PROPOSAL_CHOSEN"``), ``notify-<n>`` for
    numbers without a name."""
    if isinstance(notify, str) and not notify.isdigit():
        return notify.lower().replace("_", "-")
    n = int(notify)
    if n in NotifyType._value2member_map_:
        return NotifyType(n).name.lower().replace("_", "-")
    return f"notify-{n}"


class IsakmpError(Exception):
    """Base of all ISAKMP errors.

    Attributes:
        notify: Notify Message Type to answer with (default PAYLOAD-MALFORMED).
        data: Notification Data for that Notify (often empty).
    """

    notify: NotifyType = NotifyType.PAYLOAD_MALFORMED

    def __init__(
        self, message: str = "", *, data: bytes = b"", notify: NotifyType | None = None
    ) -> None:
        super().__init__(message or self.__class__.__name__)
        self.data = bytes(data)
        if notify is not None:
            self.notify = notify

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.args[0]!r}, notify={self.notify.name})"


class PayloadMalformed(IsakmpError):
    """Bad length, truncation, trailing bytes, reserved bits set, bad value."""

    notify = NotifyType.PAYLOAD_MALFORMED


class InvalidPayloadType(IsakmpError):
    """Unknown payload type; ``data`` is the 1-octet type (RFC 4430 §5.5)."""

    notify = NotifyType.INVALID_PAYLOAD_TYPE

    def __init__(self, payload_type: int, message: str = "") -> None:
        super().__init__(
            message or f"invalid payload type {payload_type}", data=bytes([payload_type & 0xFF])
        )
        self.payload_type = payload_type


class DoiNotSupported(IsakmpError):
    notify = NotifyType.DOI_NOT_SUPPORTED


class SituationNotSupported(IsakmpError):
    notify = NotifyType.SITUATION_NOT_SUPPORTED


class InvalidCookie(IsakmpError):
    notify = NotifyType.INVALID_COOKIE


class InvalidMajorVersion(IsakmpError):
    notify = NotifyType.INVALID_MAJOR_VERSION


class InvalidMinorVersion(IsakmpError):
    notify = NotifyType.INVALID_MINOR_VERSION


class InvalidExchangeType(IsakmpError):
    notify = NotifyType.INVALID_EXCHANGE_TYPE


class InvalidFlags(IsakmpError):
    notify = NotifyType.INVALID_FLAGS


class InvalidMessageId(IsakmpError):
    notify = NotifyType.INVALID_MESSAGE_ID


class InvalidProtocolId(IsakmpError):
    notify = NotifyType.INVALID_PROTOCOL_ID


class InvalidSpi(IsakmpError):
    notify = NotifyType.INVALID_SPI


class InvalidTransformId(IsakmpError):
    notify = NotifyType.INVALID_TRANSFORM_ID


class AttributesNotSupported(IsakmpError):
    notify = NotifyType.ATTRIBUTES_NOT_SUPPORTED


class NoProposalChosen(IsakmpError):
    notify = NotifyType.NO_PROPOSAL_CHOSEN


class BadProposalSyntax(IsakmpError):
    notify = NotifyType.BAD_PROPOSAL_SYNTAX


class InvalidKeyInformation(IsakmpError):
    notify = NotifyType.INVALID_KEY_INFORMATION


class InvalidIdInformation(IsakmpError):
    notify = NotifyType.INVALID_ID_INFORMATION


class UnequalPayloadLengths(IsakmpError):
    notify = NotifyType.UNEQUAL_PAYLOAD_LENGTHS
