"""The Endpoint Picker protocol of the Gateway API Inference Extension, as Envoy `ext_proc` messages.

What the protocol fixes (GIE's `004-endpoint-picker-protocol`, and llm-d's EPP as its reference):
- the chosen endpoint, `ip:port` — or a comma-separated list, first preferred, the rest fallbacks for the
  data plane's retries — goes in the request header `x-gateway-destination-endpoint` *and* in dynamic
  metadata `envoy.lb` / `x-gateway-destination-endpoint`;
- the data plane may narrow the choice with filter metadata `envoy.lb.subset_hint` /
  `x-gateway-destination-endpoint-subset` (a list of `ip:port`; an empty list means none is eligible);
- it reports the endpoint that served in `envoy.lb` / `x-gateway-destination-endpoint-served` (Envoy
  itself has no such report; a route can add it as a response header of that name,
  `%UPSTREAM_REMOTE_ADDRESS%`, which the EPP reads too);
- no eligible endpoint → an immediate 503; a shed request → 429.

In FULL_DUPLEX_STREAMED mode Envoy sends the body as it arrives and expects it back as streamed body
mutations; the EPP answers the headers only once it has the whole body (it must read the model and prompt
to pick), then returns the body in chunks of at most `BODY_CHUNK_BYTES` (Envoy bounds a streamed chunk
at 64 KiB in some builds). In BUFFERED mode Envoy waits for an answer to the headers, then sends the
whole body at once; the pick goes in the answer to the body.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.type.v3.http_status_pb2 import HttpStatus
from google.protobuf.struct_pb2 import Struct

DESTINATION_HEADER = "x-gateway-destination-endpoint"
LB_NAMESPACE = "envoy.lb"
SERVED_KEY = "x-gateway-destination-endpoint-served"
SUBSET_NAMESPACE = "envoy.lb.subset_hint"
SUBSET_KEY = "x-gateway-destination-endpoint-subset"
BODY_CHUNK_BYTES = 62_000
SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"
HEALTH_NAMES = ("liveness", "readiness", SERVICE_NAME, "")
"""The gRPC health service names an EPP answers (the empty name: the server as a whole)."""


def headers_of(h: pb.HttpHeaders) -> dict[str, str]:
    """Header names lower-cased (HTTP/2 and Envoy's own pseudo-headers already are); Envoy fills
    `raw_value` and leaves `value` empty."""
    return {x.key.lower(): (x.raw_value.decode("latin-1") if x.raw_value else x.value) for x in h.headers.headers}


def subset_hint(request: pb.ProcessingRequest) -> set[str] | None:
    """The endpoints the data plane allows (`ip:port` or bare IPs), or None when it sets no hint. A value
    that is not a list is read as a comma-separated string."""
    ns = request.metadata_context.filter_metadata.get(SUBSET_NAMESPACE)
    if ns is None or SUBSET_KEY not in ns.fields:
        return None
    v = ns.fields[SUBSET_KEY]
    if v.HasField("list_value"):
        return {x.string_value.strip() for x in v.list_value.values if x.string_value.strip()}
    return {p.strip() for p in v.string_value.split(",") if p.strip()}


def allowed(endpoint_id: str, subset: set[str]) -> bool:
    """Whether `ip:port` is in a subset hint, whose entries may name the IP alone."""
    return endpoint_id in subset or endpoint_id.rpartition(":")[0] in subset


def served(request: pb.ProcessingRequest) -> str | None:
    ns = request.metadata_context.filter_metadata.get(LB_NAMESPACE)
    if ns is None or SERVED_KEY not in ns.fields:
        return None
    return ns.fields[SERVED_KEY].string_value or None


def _mutation(headers: Mapping[str, str], remove: tuple[str, ...] = ()) -> pb.HeaderMutation:
    return pb.HeaderMutation(
        set_headers=[HeaderValueOption(header=HeaderValue(key=k, raw_value=v.encode())) for k, v in headers.items()],
        remove_headers=list(remove),
    )


def _destination_metadata(destinations: str) -> Struct:
    md = Struct()
    md.update({LB_NAMESPACE: {DESTINATION_HEADER: destinations}})
    return md


def _pick(destinations: str, extra: Mapping[str, str]) -> pb.CommonResponse:
    mutation = _mutation({DESTINATION_HEADER: destinations, **extra})
    return pb.CommonResponse(clear_route_cache=True, header_mutation=mutation)


def picked_headers(destinations: str, extra: Mapping[str, str] = {}) -> pb.ProcessingResponse:
    """Answer to the request headers (full-duplex mode): the destination header and metadata, and a route
    recomputation so that a route keyed on the header sees it."""
    return pb.ProcessingResponse(
        request_headers=pb.HeadersResponse(response=_pick(destinations, extra)),
        dynamic_metadata=_destination_metadata(destinations),
    )


def picked_body(
    destinations: str, extra: Mapping[str, str] = {}, *, body: bytes | None = None
) -> pb.ProcessingResponse:
    """Answer to a buffered request body: the same header and metadata; the body goes on unchanged, or
    replaced by `body`."""
    common = _pick(destinations, extra)
    if body is not None:
        common.body_mutation.CopyFrom(pb.BodyMutation(body=body))
    return pb.ProcessingResponse(
        request_body=pb.BodyResponse(response=common),
        dynamic_metadata=_destination_metadata(destinations),
    )


def continue_headers(
    *, response: bool = False, extra: Mapping[str, str] = {}, remove: tuple[str, ...] = ()
) -> pb.ProcessingResponse:
    common = pb.CommonResponse(header_mutation=_mutation(extra, remove)) if extra or remove else pb.CommonResponse()
    if response:
        return pb.ProcessingResponse(response_headers=pb.HeadersResponse(response=common))
    return pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=common))


def streamed_body(body: bytes, *, response: bool, end_of_stream: bool) -> Iterator[pb.ProcessingResponse]:
    """`body` handed back in full-duplex mode, in chunks of at most BODY_CHUNK_BYTES; `end_of_stream` on
    the last one only (an empty body is one empty chunk)."""
    n = len(body)
    starts = range(0, n, BODY_CHUNK_BYTES) if n else (0,)
    for start in starts:
        last = start + BODY_CHUNK_BYTES >= n
        mutation = pb.BodyMutation(
            streamed_response=pb.StreamedBodyResponse(
                body=body[start : start + BODY_CHUNK_BYTES], end_of_stream=end_of_stream and last
            )
        )
        answer = pb.BodyResponse(response=pb.CommonResponse(body_mutation=mutation))
        yield pb.ProcessingResponse(response_body=answer) if response else pb.ProcessingResponse(request_body=answer)


def trailers(*, response: bool) -> pb.ProcessingResponse:
    if response:
        return pb.ProcessingResponse(response_trailers=pb.TrailersResponse())
    return pb.ProcessingResponse(request_trailers=pb.TrailersResponse())


def immediate(status: int, body: bytes, headers: Mapping[str, str], details: str) -> pb.ProcessingResponse:
    """Envoy answers the client with this at once; the request goes to no engine."""
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=HttpStatus(code=status),  # type: ignore[arg-type]  # the enum's values are the HTTP codes
            headers=_mutation(headers),
            body=body,
            details=details,
        )
    )
