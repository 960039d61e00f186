"""The Endpoint Picker protocol's messages (gateway/extproc.py): what Envoy reads from them."""

from __future__ import annotations

from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf.struct_pb2 import Struct

from headway.gateway import extproc


def _with_metadata(namespace: str, value: dict) -> pb.ProcessingRequest:
    s = Struct()
    s.update(value)
    req = pb.ProcessingRequest()
    req.metadata_context.filter_metadata[namespace].CopyFrom(s)
    return req


def test_the_pick_sets_the_destination_header_and_envoy_lb_metadata() -> None:
    out = extproc.picked_headers("10.0.0.1:8000,10.0.0.2:8000", {"x-extra": "1"})
    common = out.request_headers.response
    assert common.clear_route_cache
    headers = {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}
    assert headers == {extproc.DESTINATION_HEADER: "10.0.0.1:8000,10.0.0.2:8000", "x-extra": "1"}
    lb = out.dynamic_metadata.fields[extproc.LB_NAMESPACE].struct_value
    assert lb.fields[extproc.DESTINATION_HEADER].string_value == "10.0.0.1:8000,10.0.0.2:8000"
    buffered = extproc.picked_body("10.0.0.1:8000")
    assert buffered.request_body.response.header_mutation.set_headers[0].header.key == extproc.DESTINATION_HEADER
    assert not buffered.request_body.response.HasField("body_mutation")  # the body goes on unchanged


def test_a_body_goes_back_in_bounded_chunks_with_end_of_stream_on_the_last() -> None:
    body = bytes(range(256)) * 700  # 179,200 bytes
    parts = list(extproc.streamed_body(body, response=False, end_of_stream=True))
    streamed = [p.request_body.response.body_mutation.streamed_response for p in parts]
    assert all(len(s.body) <= extproc.BODY_CHUNK_BYTES for s in streamed)
    assert b"".join(s.body for s in streamed) == body
    assert [s.end_of_stream for s in streamed] == [False] * (len(parts) - 1) + [True]
    (empty,) = extproc.streamed_body(b"", response=True, end_of_stream=True)
    assert empty.response_body.response.body_mutation.streamed_response.end_of_stream
    (open_end,) = extproc.streamed_body(b"x", response=False, end_of_stream=False)  # trailers follow
    assert not open_end.request_body.response.body_mutation.streamed_response.end_of_stream


def test_the_subset_hint_is_read_as_a_list_or_a_comma_string() -> None:
    key = extproc.SUBSET_KEY
    assert extproc.subset_hint(pb.ProcessingRequest()) is None
    assert extproc.subset_hint(_with_metadata(extproc.SUBSET_NAMESPACE, {"other": "x"})) is None
    listed = _with_metadata(extproc.SUBSET_NAMESPACE, {key: ["10.0.0.1:8000", "10.0.0.2"]})
    assert extproc.subset_hint(listed) == {"10.0.0.1:8000", "10.0.0.2"}
    text = _with_metadata(extproc.SUBSET_NAMESPACE, {key: "10.0.0.1:8000, 10.0.0.3:8000"})
    assert extproc.subset_hint(text) == {"10.0.0.1:8000", "10.0.0.3:8000"}
    assert extproc.subset_hint(_with_metadata(extproc.SUBSET_NAMESPACE, {key: []})) == set()
    assert extproc.allowed("10.0.0.2:8000", {"10.0.0.2"})
    assert not extproc.allowed("10.0.0.2:8000", {"10.0.0.1:8000"})


def test_the_served_endpoint_is_read_from_envoy_lb_metadata() -> None:
    assert extproc.served(pb.ProcessingRequest()) is None
    req = _with_metadata(extproc.LB_NAMESPACE, {extproc.SERVED_KEY: "10.0.0.2:8000"})
    assert extproc.served(req) == "10.0.0.2:8000"


def test_an_immediate_response_carries_status_headers_and_body() -> None:
    out = extproc.immediate(429, b'{"error": {}}', {"retry-after": "1"}, "shed").immediate_response
    assert out.status.code == 429
    assert out.body == b'{"error": {}}'
    assert out.headers.set_headers[0].header.key == "retry-after"
    assert out.details == "shed"
