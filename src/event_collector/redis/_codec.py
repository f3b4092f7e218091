"""What crosses Redis: the codec, and the shapes of an event and of its
answer on the wire.

A work entry holds the fields ``d`` (the encoded payload: its value and
how to deliver it), ``r`` (the publisher's reply stream, empty when nobody
waits) and ``c`` (the codec's name). A reply entry holds ``c`` and either
``e`` (the work entry's id) and ``a`` (the encoded results), or, for
several answers to one publisher written together, ``n`` (how many) and
``e0``, ``a0``, ``e1``, ``a1``... Both go through the same
:class:`Codec`, JSON unless another is given; nothing is ever pickled.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from .._payload_routing import check_headers
from ..data import Delivery, Error, Ok, Payload, ResultList
from ..exceptions import DeliveryExhausted, RemoteError

__all__ = ["Codec", "JsonCodec", "MsgpackCodec"]


@runtime_checkable
class Codec(Protocol):
    """Turns payload values and results into bytes and back.

    ``name`` is written beside every entry, so that a worker refuses (dead
    letters) an entry written with another codec instead of misreading it.
    """

    name: str

    def encode(self, value: Any) -> bytes:
        """The bytes of ``value``; raise ``TypeError`` or ``ValueError``
        for a value the codec cannot carry."""
        ...

    def decode(self, data: bytes) -> Any:
        """The value of ``data``; raise ``ValueError`` for bytes that are
        not the codec's."""
        ...


class JsonCodec:
    """JSON (the standard library's): dicts, lists, strings, numbers,
    booleans and ``None``; what a non-Python process can read too.

    A dict's keys must be strings; tuples come back as lists.
    """

    name = "json"

    __slots__ = ("_decoder", "_encoder", "_one_shot", "_raw_decode")

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(
            ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
        self._one_shot = _one_shot_encoder(self._encoder)
        self._decoder = json.JSONDecoder()
        self._raw_decode = self._decoder.raw_decode

    def encode(self, value: Any) -> bytes:
        """Encode ``value`` as UTF-8 JSON; ``TypeError`` for what JSON has
        no form for (a set, a datetime, an object), ``ValueError`` for NaN
        and the infinities, and for a value nested too deep or containing
        itself."""
        one_shot = self._one_shot
        try:
            if one_shot is None:
                return self._encoder.encode(value).encode()
            return "".join(one_shot(value, 0)).encode()
        except RecursionError:
            raise ValueError(
                "the value is nested too deeply, or contains itself"
            ) from None

    def decode(self, data: bytes) -> Any:
        """Decode UTF-8 JSON (``ValueError`` if it is not)."""
        text = data.decode()
        try:
            value, end = self._raw_decode(text)
        except ValueError:
            end = -1
        if end != len(text):
            # Whitespace around the document, or not JSON at all: the full
            # decoder accepts the one and names what is wrong with the other.
            return self._decoder.decode(text)
        return value

    def __repr__(self) -> str:
        return "JsonCodec()"


def _unencodable(value: Any) -> Any:
    raise TypeError(
        f"Object of type {value.__class__.__name__} is not JSON serializable"
    )


def _one_shot_encoder(encoder: json.JSONEncoder) -> Any:
    """The standard library's C encoder with ``encoder``'s settings, made
    once rather than on every call as ``JSONEncoder.encode`` does (it is
    most of the cost of encoding a small document); ``None`` where there is
    none or it does not behave as ``encoder`` on a sample.

    It keeps no record of the containers it is inside (the check for a
    value that contains itself): that record would be shared by every call,
    from any thread. Such a value ends in ``RecursionError`` instead, which
    :meth:`JsonCodec.encode` reports as the ``ValueError`` the check would
    have raised.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython has it
        return None
    try:
        one_shot = make(
            None,
            _unencodable,
            json.encoder.encode_basestring,
            None,
            encoder.key_separator,
            encoder.item_separator,
            encoder.sort_keys,
            encoder.skipkeys,
            encoder.allow_nan,
        )
        sample = {"v": [1, 2.5, "é\n", None, True, {"k": -3}]}
        if "".join(one_shot(sample, 0)) != encoder.encode(sample):
            return None  # pragma: no cover - another Python's encoder
    except Exception:  # pragma: no cover - another signature
        return None
    return one_shot


class MsgpackCodec:
    """MessagePack, through the ``msgpack`` package (``pip install
    msgpack``): more compact than JSON and carries bytes as they are."""

    name = "msgpack"

    __slots__ = ("_packb", "_unpackb")

    def __init__(self) -> None:
        try:
            import msgpack  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError as exc:  # pragma: no cover - depends on the venv
            raise ImportError(
                "MsgpackCodec needs the msgpack package: pip install msgpack"
            ) from exc
        self._packb = msgpack.packb
        self._unpackb = msgpack.unpackb

    def encode(self, value: Any) -> bytes:
        """Pack ``value`` (``TypeError`` for what MessagePack cannot carry)."""
        data: bytes = self._packb(value, use_bin_type=True)
        return data

    def decode(self, data: bytes) -> Any:
        """Unpack ``data``; ``ValueError`` if it is not MessagePack."""
        try:
            return self._unpackb(data, raw=False, strict_map_key=False)
        except Exception as exc:
            raise ValueError(f"not MessagePack: {exc}") from exc

    def __repr__(self) -> str:
        return "MsgpackCodec()"


# -- the payload on the wire ---------------------------------------------------


def payload_document(value: Any) -> dict[str, Any]:
    """What a sent value becomes before encoding: ``{"v": value}``, with the
    delivery mode (``"m"``), keys (``"k"``), topics (``"t"``) and headers
    (``"h"``) of a :class:`~event_collector.data.Payload` when it has them."""
    if not isinstance(value, Payload):
        return {"v": value}
    document: dict[str, Any] = {"v": value.value}
    if value.delivery is not Delivery.BROADCAST:
        document["m"] = value.delivery.value
    if value.keys:
        document["k"] = list(value.keys)
    if value.topics:
        document["t"] = list(value.topics)
    if value._headers:
        document["h"] = check_headers(value._headers)
    return document


def payload_from_document(document: Any) -> Payload[Any]:
    """The :class:`Payload` a worker hands its handlers; ``ValueError``
    for a document this library did not write."""
    if not isinstance(document, dict) or "v" not in document:
        raise ValueError("the entry's payload is not an event-collector document")
    mode = document.get("m")
    keys = document.get("k")
    topics = document.get("t")
    if mode is None:
        delivery = None
    else:
        try:
            delivery = Delivery(mode)
        except ValueError:
            raise ValueError(f"unknown delivery mode {mode!r}") from None
    for names in (keys, topics):
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) for n in names)
        ):
            raise ValueError("keys and topics must be lists of strings")
    headers = document.get("h")
    try:
        return Payload(document["v"], delivery, keys, topics, headers=headers)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the entry's routing or headers are invalid: {exc}") from None


# -- results on the wire -------------------------------------------------------

_DELIVERY_EXHAUSTED = "event_collector.DeliveryExhausted"


def type_name(exc: BaseException | str) -> str:
    """The name :attr:`RemoteError.type` gives an exception's class: its
    qualified name, prefixed by its module unless it is a builtin."""
    if isinstance(exc, str):
        return ""
    cls = type(exc)
    if isinstance(exc, RemoteError):
        return exc.type
    if isinstance(exc, DeliveryExhausted):
        return _DELIVERY_EXHAUSTED
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


def answer_document(results: ResultList) -> list[list[Any]]:
    """The results as the codec carries them: ``["ok", value]`` or
    ``["err", type, message, details]`` per collector, in order, each
    followed by the collector's key when the result names one."""
    out: list[list[Any]] = []
    for result in results:
        if type(result) is Ok:
            item = ["ok", result.value]
        else:
            assert isinstance(result, Error)
            err = result.err
            details = result.details
            if details is not None:
                # A traceback is for this process's log; details must stay
                # what the codec carries.
                details = {k: v for k, v in details.items() if k != "trace"} or None
            if isinstance(err, DeliveryExhausted):
                details = {**(details or {}), "attempts": err.attempts}
            item = ["err", type_name(err), str(err), details]
        if result.collector is not None:
            item.append(result.collector)
        out.append(item)
    return out


def results_from_document(document: Any) -> ResultList:
    """The publisher's side of :func:`answer_document`: ``Ok`` values, and
    ``Error(RemoteError)`` (``Error(DeliveryExhausted)`` for a dead
    letter); ``ValueError`` for a document this library did not write."""
    if not isinstance(document, list):
        raise ValueError("the reply is not a list of results")
    results = ResultList()
    for item in document:
        if not isinstance(item, list) or not item:
            raise ValueError("a result in the reply is malformed")
        kind, size = item[0], len(item)
        collector = None
        if (kind == "ok" and size == 3) or (kind == "err" and size == 5):
            collector = item[-1]
            if not isinstance(collector, str):
                raise ValueError("a result in the reply names no collector")
        if kind == "ok" and size in (2, 3):
            results.append(Ok(item[1], collector))
        elif kind == "err" and size in (4, 5):
            _, name, message, details = item[:4]
            if details is not None and not isinstance(details, dict):
                details = {"details": details}
            err: BaseException | str
            if name == _DELIVERY_EXHAUSTED:
                attempts = (details or {}).get("attempts", 0)
                err = DeliveryExhausted(int(attempts), str(message))
            elif name == "":
                err = str(message)
            else:
                err = RemoteError(str(name), str(message))
            results.append(Error(err, details, collector))
        else:
            raise ValueError("a result in the reply is malformed")
    return results


def encode_answer(codec: Codec, results: ResultList, limit: int) -> bytes:
    """The encoded answer of an event, or an error per collector when the
    results cannot be encoded or are larger than ``limit`` bytes."""
    try:
        data = codec.encode(answer_document(results))
    except (TypeError, ValueError) as exc:
        why = f"the result cannot be sent back through Redis: {exc}"
        return codec.encode(_failed(results, type(exc).__qualname__, why))
    if len(data) > limit:
        why = (
            f"the results are {len(data)} bytes encoded, over max_payload_bytes={limit}"
        )
        return codec.encode(_failed(results, "ValueError", why))
    return data


def _failed(results: ResultList, name: str, why: str) -> list[list[Any]]:
    """One error per result, each naming the result's collector."""
    return [
        ["err", name, why, None]
        if result.collector is None
        else ["err", name, why, None, result.collector]
        for result in results
    ]
