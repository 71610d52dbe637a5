"""The emulator over real HTTP: every documented status and body, rotation, sequences, faults."""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any, Optional

import pytest
import requests

from stitch_import.emulator import Emulator
from stitch_import.errors import ConfigurationError

CUSTOMERS_SCHEMA = {"properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                                   "modified_at": {"type": "string", "format": "date-time"}}}


def batch_body(messages: Optional[list[dict[str, Any]]] = None, **changes: Any) -> dict[str, Any]:
    """The documented batch example, with ``changes`` applied (``None`` removes a key)."""
    body: dict[str, Any] = {
        "table_name": "customers",
        "schema": CUSTOMERS_SCHEMA,
        "messages": messages if messages is not None else [
            {"action": "upsert", "sequence": 1565880017,
             "data": {"id": 1, "name": "Finn", "modified_at": "2020-01-13T21:25:03+0000"}}],
        "key_names": ["id"],
    }
    for name, value in changes.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def message(sequence: int, **data: Any) -> dict[str, Any]:
    return {"action": "upsert", "sequence": sequence, "data": data}


def push_record(client_id: int = 7723, table: str = "customers", sequence: int = 1,
                **data: Any) -> dict[str, Any]:
    return {"client_id": client_id, "table_name": table, "sequence": sequence,
            "data": data or {"id": 4, "name": "BMO"}, "key_names": ["id"], "action": "upsert"}


def post(emu: Emulator, endpoint: str, body: Any = None, *, token: Optional[str] = "default",
         raw: Optional[bytes] = None, content_type: str = "application/json",
         session: Any = requests) -> requests.Response:
    """POST to /v2/import/<endpoint> with the emulator's token unless told otherwise."""
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {emu.token if token == 'default' else token}"
    data = raw if raw is not None else json.dumps(body).encode()
    return session.post(f"{emu.base_url}/v2/import/{endpoint}", data=data, headers=headers,
                        timeout=30)


@pytest.fixture
def emu():
    with Emulator() as emulator:
        yield emulator


def assert_answer(response: requests.Response, status: int, text: str,
                  content_type: str = "application/json") -> None:
    assert (response.status_code, response.text) == (status, text)
    assert response.headers["Content-Type"].startswith(content_type)


# Status, success bodies ------------------------------------------------------------------------

def test_status_needs_no_token(emu):
    response = requests.get(emu.base_url + "/v2/import/status", timeout=5)
    assert response.status_code == 200
    document = response.json()
    assert document["name"] == "pipeline.gate"
    assert (document["status"], document["reason"]) == ("OK", None)
    assert isinstance(document["version"], str) and isinstance(document["revision"], str)


def test_batch_accepted(emu):
    assert_answer(post(emu, "batch", batch_body()), 201,
                  '{"status":"OK","message":"Batch Accepted!"}')
    assert emu.rows("customers") == [
        {"id": 1, "name": "Finn", "modified_at": "2020-01-13T21:25:03+0000"}]


def test_push_accepted_across_tables(emu):
    records = [push_record(table="customers"), push_record(table="orders", id=9)]
    assert_answer(post(emu, "push", records), 201, '{"status":"OK","message":"Batch Accepted!"}')
    assert emu.tables() == ["customers", "orders"]
    assert emu.rows("orders") == [{"id": 9}]
    (accepted,) = emu.accepted_requests
    assert (accepted.endpoint, accepted.record_count, accepted.tables, accepted.client_id,
            accepted.status) == ("push", 2, ("customers", "orders"), 7723, 201)
    assert accepted.body == records


def test_validate_answers_valid_and_stores_nothing(emu):
    assert_answer(post(emu, "validate", [push_record()]), 200,
                  '{"status":"OK","message":"Batch is valid!"}')
    assert emu.tables() == []
    assert emu.accepted_requests == []


def test_validate_refuses_batch_bodies(emu):
    assert_answer(post(emu, "validate", batch_body()), 400,
                  '{"status": "ERROR", "message": "An array of records is expected"}')


def test_accept_with_202_stores_and_answers_queued(emu):
    emu.accept_with_202_next(1)
    assert_answer(post(emu, "batch", batch_body()), 202,
                  '{"status":"Accepted","message":"The batch is queued to be processed."}')
    assert len(emu.rows("customers")) == 1
    assert emu.accepted_requests[0].status == 202
    assert post(emu, "batch", batch_body()).status_code == 201


def test_202_is_kept_for_an_accepted_request(emu):
    emu.accept_with_202_next(1)
    assert post(emu, "batch", batch_body(), token="at_wrong").status_code == 401
    assert post(emu, "push", [push_record()]).status_code == 202


# 405, 401, 415, 413 ----------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v2/import/batch"), ("PUT", "/v2/import/push"), ("DELETE", "/v2/import/validate"),
    ("POST", "/v2/import/status"), ("PUT", "/v4/sources/1/tokens"),
    ("GET", "/v4/sources/1/tokens/2"),
])
def test_unsupported_method(emu, method, path):
    response = requests.request(method, emu.base_url + path, timeout=5,
                                headers={"Authorization": f"Bearer {emu.token}"})
    assert_answer(response, 405, "Method not allowed.", "text/plain")


@pytest.mark.parametrize("endpoint", ["batch", "push", "validate"])
@pytest.mark.parametrize("token", ["at_not_a_token", None, ""])
def test_bad_or_missing_token(emu, endpoint, token):
    body = batch_body() if endpoint == "batch" else [push_record()]
    assert_answer(post(emu, endpoint, body, token=token), 401, '{"message":"Not Authorized"}')
    assert emu.tables() == []


def test_method_is_checked_before_the_token(emu):
    response = requests.get(emu.base_url + "/v2/import/push", timeout=5)
    assert response.status_code == 405


def test_token_of_another_region(emu):
    assert_answer(post(emu, "batch", batch_body(), token=emu.foreign_region_token()), 401,
                  '{"message": "Invalid region."}')


def test_paused_integration_then_unpaused(emu):
    emu.pause()
    assert_answer(post(emu, "push", [push_record()]), 401,
                  '{"error": "Forbidden", "errors": {"error": "Connection is not active."}}')
    assert emu.tables() == []
    emu.unpause()
    assert post(emu, "push", [push_record()]).status_code == 201


def test_batch_wrong_content_type(emu):
    response = post(emu, "batch", batch_body(), content_type="application/transit+json")
    assert_answer(response, 415, "Content-Type must be application/json", "text/plain")


@pytest.mark.parametrize("endpoint", ["push", "validate"])
def test_push_wrong_content_type(emu, endpoint):
    response = post(emu, endpoint, [push_record()], content_type="application/xml")
    assert_answer(response, 415,
                  '{"status": "ERROR", "message": "Unsupported content-type application/xml. '
                  'Please send application/json or application/transit+json"}')


def test_token_is_checked_before_content_type(emu):
    response = post(emu, "batch", batch_body(), token="at_bad", content_type="text/csv")
    assert response.status_code == 401


def test_content_type_is_checked_before_size(emu):
    response = post(emu, "batch", raw=b" " * 20_000_001, content_type="text/plain")
    assert response.status_code == 415


def test_body_of_20_mb_accepted(emu):
    body = batch_body([message(1, id=1, name="")])
    room = 20_000_000 - len(json.dumps(body).encode())
    body["messages"][0]["data"]["name"] = "x" * room
    raw = json.dumps(body).encode()
    assert len(raw) == 20_000_000
    assert post(emu, "batch", raw=raw).status_code == 201
    assert len(emu.rows("customers")[0]["name"]) == room


@pytest.mark.parametrize("endpoint", ["batch", "push"])
def test_body_over_20_mb_refused(emu, endpoint):
    response = post(emu, endpoint, raw=b" " * 20_000_001)
    assert_answer(response, 413, '{"status": "ERROR", "message": "Request rejected: request '
                                 'size (20000001 bytes) exceeds the maximum"}')


def test_chunked_body_over_20_mb_refused(emu):
    chunks = (b" " * 1_000_000 for _ in range(21))
    response = requests.post(emu.base_url + "/v2/import/push", data=chunks, timeout=30,
                             headers={"Authorization": f"Bearer {emu.token}",
                                      "Content-Type": "application/json"})
    assert_answer(response, 413, '{"status": "ERROR", "message": "Request rejected: request '
                                 'size (21000000 bytes) exceeds the maximum"}')


# Batch body errors -----------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "error"), [
    (batch_body(table_name=None),
     "Request failed validation:#: required key [table_name] not found"),
    ({"table_name": "t", "schema": CUSTOMERS_SCHEMA},
     "Request failed validation:#: required key [messages] not found"),
    (batch_body(table_version=3),
     "Request failed validation:#: extraneous key [table_version] is not permitted"),
    (batch_body(table_name=5),
     "Request failed validation:#/table_name: expected type: String, found: Integer"),
    (batch_body(key_names="id"),
     "Request failed validation:#/key_names: expected type: JSONArray, found: String"),
    (batch_body(schema=[]),
     "Request failed validation:#/schema: expected type: JSONObject, found: JSONArray"),
    (batch_body([message(2**63, id=1)]),
     "Request failed validation:#: sequence can not be above 9223372036854775807"),
    (batch_body([{"action": "upsert", "sequence": "1", "data": {"id": 1}}]),
     "Request failed validation:#/messages/0/sequence: expected type: Integer, found: String"),
    (batch_body([{"action": "delete", "sequence": 1, "data": {"id": 1}}]),
     "Request failed validation:#/messages/0/action: delete is not a valid enum value"),
    (batch_body([{"action": "upsert", "data": {"id": 1}}]),
     "Request failed validation:#/messages/0: required key [sequence] not found"),
    (batch_body([message(1, id=1), message(2, id="2")]),
     "Record 1 did not conform to schema: #/id: expected: Integer, found: String"),
    (batch_body([message(1, id=1, modified_at="2020-13-01T00:00:00Z")]),
     "Record 0 did not conform to schema: #/modified_at: [2020-13-01T00:00:00Z] is not a "
     "valid date-time"),
    (batch_body([message(1, name="no id")]), "Record is missing key property id"),
    (batch_body([message(1, id=None)]),
     "Record 0 did not conform to schema: #/id: expected: Integer, found: Null"),
    (batch_body(schema={"properties": {"id": {"type": ["null", "integer"]}}},
                messages=[message(1, id=None)]), "Record is missing key property id"),
    (batch_body(schema={"properties": {"id": {"type": "foo"}}}),
     "Invalid JSON schema: unknown type: [foo]"),
    (batch_body(key_names=["email"]), "Schema is missing key property email"),
    (batch_body(schema={"properties": {"id": {"type": "string"}}},
                messages=[message(1, id="k" * 256)]),
     "Record 0 key property id is 256 characters long; string key values must be under 256 "
     "characters"),
    (batch_body([]), "Request failed validation:#/messages: expected minimum item count: 1, "
                     "found: 0"),
])
def test_batch_refusals(emu, body, error):
    assert_answer(post(emu, "batch", body), 400, json.dumps({"error": error}))
    assert emu.tables() == []


def test_string_key_of_255_characters_is_accepted(emu):
    body = batch_body(schema={"properties": {"id": {"type": "string"}}},
                      messages=[message(1, id="k" * 255)])
    assert post(emu, "batch", body).status_code == 201


def test_batch_of_20000_messages_accepted_20001_refused(emu):
    body = batch_body([message(index, id=index) for index in range(20_000)])
    assert post(emu, "batch", body).status_code == 201
    assert len(emu.rows("customers")) == 20_000
    body["messages"].append(message(1, id=1))
    assert_answer(post(emu, "batch", body), 400, json.dumps({
        "error": "Request failed validation:#/messages: expected maximum item count: 20000, "
                 "found: 20001"}))


def test_batch_malformed_json(emu):
    response = post(emu, "batch", raw=b'{"table_name": ')
    assert response.status_code == 400
    assert response.json()["error"].startswith("Malformed JSON")


# Push body errors ------------------------------------------------------------------------------

def test_push_body_not_an_array(emu):
    assert_answer(post(emu, "push", push_record()), 400,
                  '{"status": "ERROR", "message": "An array of records is expected"}')


@pytest.mark.parametrize("raw", [b"[{", b"", b"[NaN]"])
def test_push_malformed_json(emu, raw):
    response = post(emu, "push", raw=raw)
    assert response.status_code == 400
    document = response.json()
    assert (document["status"], document["message"], document["input"]) == (
        "ERROR", "Malformed json in the body!", None)
    assert isinstance(document["error"], str) and document["error"]


def test_push_without_client_id(emu):
    record = push_record()
    del record["client_id"]
    assert_answer(post(emu, "push", [record]), 401,
                  '{"status": "ERROR", "error": "Not Authenticated.", "errors": null}')


def test_push_with_the_client_id_of_another_integration(emu):
    assert_answer(post(emu, "push", [push_record(client_id=99)]), 403,
                  '{"status": "ERROR", "error": "Forbidden", "errors": {"error": '
                  '"Access token is not associated with this client."}}')


def test_push_with_several_client_ids(emu):
    assert_answer(post(emu, "push", [push_record(), push_record(client_id=99)]), 422,
                  '{"status":"ERROR","error":"Request cannot be processed; see errors.",'
                  '"errors":[{"reason":"The batch contains data points for multiple clients. '
                  'Only client_id 7723 is allowed"}]}')


@pytest.mark.parametrize(("change", "reason"), [
    ({"sequence": "1"}, {"sequence": ["should be an integer", "should be a number"]}),
    ({"sequence": 1.5}, {"sequence": ["should be an integer"]}),
    ({"table_name": ""}, {"table_name": ["must be present"]}),
    ({"data": [1]}, {"data": ["should be an object"]}),
    ({"data": {"name": "no id"}}, {"data": ["data must include keys"]}),
    ({"data": {"id": None}}, {"data": ["keys cannot not be null in data"]}),
    ({"data": {"id": "k" * 256}}, {"data": ["string key values must be under 256 characters"]}),
    ({"action": "delete"}, {"action": ["should be upsert"]}),
    ({"key_names": None}, {"key_names": ["must be present"]}),
])
@pytest.mark.parametrize("endpoint", ["push", "validate"])
def test_push_field_errors(emu, endpoint, change, reason):
    record = {**push_record(), **change}
    response = post(emu, endpoint, [push_record(), record])
    assert_answer(response, 422, json.dumps(
        {"status": "ERROR", "error": "Request cannot be processed; see errors.",
         "errors": [{"reason": reason}]}, separators=(",", ":")))
    assert emu.tables() == []


def test_push_transit(emu):
    transit = ('[["^ ","client_id",7723,"table_name","customers","sequence",["~#\'","~i5"],'
               '"data",["^ ","id",1,"name","Finn","born","~m0"],"key_names",["id"],'
               '"action","upsert"],'
               '["^ ","^0",7723,"^1","customers","^2",6,"^3",["^ ","id",2,"~:kind","~:vip",'
               '"^4","Jake"],"^6",["id"],"^7","upsert"]]')
    response = post(emu, "push", raw=transit.encode(), content_type="application/transit+json")
    assert response.status_code == 201, response.text
    assert emu.records("customers") == [
        (5, {"id": 1, "name": "Finn", "born": "1970-01-01T00:00:00.000Z"}),
        (6, {"id": 2, "kind": "vip", "name": "Jake"})]


def test_push_malformed_transit(emu):
    response = post(emu, "push", raw=b'[["^ ","^9",1]]', content_type="application/transit+json")
    assert response.status_code == 400
    assert response.json()["message"] == "Malformed json in the body!"


# Sequences -------------------------------------------------------------------------------------

def test_highest_sequence_wins_within_one_request_whatever_its_position(emu):
    body = batch_body([message(3, id=1, name="newest"), message(1, id=1, name="oldest"),
                       message(2, id=1, name="middle"), message(1, id=2, name="other")])
    assert post(emu, "batch", body).status_code == 201
    assert emu.records("customers") == [(3, {"id": 1, "name": "newest"}),
                                        (1, {"id": 2, "name": "other"})]


def test_older_sequence_never_replaces_newer_across_requests(emu):
    assert post(emu, "batch", batch_body([message(10, id=1, name="new")])).status_code == 201
    assert post(emu, "push", [push_record(sequence=9, id=1, name="late replay")]).status_code \
        == 201
    assert emu.rows("customers") == [{"id": 1, "name": "new"}]
    assert post(emu, "batch", batch_body([message(11, id=1, name="newer")])).status_code == 201
    assert emu.rows("customers") == [{"id": 1, "name": "newer"}]


def test_equal_sequence_keeps_the_later_arrival(emu):
    body = batch_body([message(5, id=1, name="first"), message(5, id=1, name="second")])
    assert post(emu, "batch", body).status_code == 201
    assert emu.rows("customers") == [{"id": 1, "name": "second"}]


def test_keyed_rows_sorted_by_key(emu):
    post(emu, "batch", batch_body([message(1, id=3), message(1, id=1), message(1, id=2)]))
    assert [row["id"] for row in emu.rows("customers")] == [1, 2, 3]


def test_append_only_appends_every_record(emu):
    body = batch_body([message(2, id=1, name="b"), message(1, id=1, name="a")], key_names=None)
    assert post(emu, "batch", body).status_code == 201
    assert post(emu, "batch", body).status_code == 201
    assert emu.records("customers") == [(2, {"id": 1, "name": "b"}),
                                        (1, {"id": 1, "name": "a"})] * 2


def test_reset_forgets_data_logs_and_faults_but_keeps_tokens(emu):
    second = emu.generate_token()
    post(emu, "batch", batch_body())
    emu.fail_next(1, 503)
    emu.reset()
    assert (emu.tables(), emu.accepted_requests, emu.request_log) == ([], [], [])
    assert post(emu, "batch", batch_body(), token=second).status_code == 201


def test_request_log_keeps_rejected_requests(emu):
    post(emu, "batch", batch_body(), token="at_bad")
    post(emu, "batch", batch_body())
    requests.get(emu.base_url + "/v2/import/status", timeout=5)
    assert [(entry.method, entry.path, entry.status) for entry in emu.request_log] == [
        ("POST", "/v2/import/batch", 401), ("POST", "/v2/import/batch", 201),
        ("GET", "/v2/import/status", 200)]


# Tokens and rotation ---------------------------------------------------------------------------

def connect(emu: Emulator, method: str, suffix: str = "", token: Optional[str] = None):
    return requests.request(method, f"{emu.base_url}/v4/sources/{emu.source_id}/tokens{suffix}",
                            headers={"Authorization": f"Bearer {token or emu.connect_token}"},
                            timeout=5)


def test_rotation_through_the_connect_api(emu):
    first = emu.token
    created = connect(emu, "POST")
    assert created.status_code == 200
    second = created.json()["access_token"]
    assert second.startswith("at_") and second != first
    listing = connect(emu, "GET").json()
    assert [entry["token_id"] for entry in listing] == sorted(entry["token_id"]
                                                               for entry in listing)
    assert listing[-1]["token_id"] == created.json()["id"]
    assert post(emu, "batch", batch_body(), token=first).status_code == 201
    assert post(emu, "batch", batch_body(), token=second).status_code == 201

    refused = connect(emu, "POST")
    assert refused.status_code == 409
    assert "at most 2 active tokens" in refused.json()["error"]["message"]

    deleted = connect(emu, "DELETE", f"/{listing[0]['token_id']}")
    assert deleted.status_code == 200
    assert deleted.json()["id"] == emu.source_id
    assert_answer(post(emu, "batch", batch_body(), token=first), 401,
                  '{"message":"Not Authorized"}')
    assert post(emu, "batch", batch_body(), token=second).status_code == 201
    assert emu.active_tokens() == [second]
    assert connect(emu, "POST").status_code == 200


def test_connect_api_needs_the_connect_token(emu):
    assert_answer(connect(emu, "GET", token="ac_wrong"), 401, '{"message":"Not Authorized"}')
    assert_answer(connect(emu, "POST", token=emu.token), 401, '{"message":"Not Authorized"}')
    assert emu.active_tokens() == [emu.token]


def test_connect_api_unknown_source_and_token(emu):
    response = requests.get(f"{emu.base_url}/v4/sources/999/tokens", timeout=5,
                            headers={"Authorization": f"Bearer {emu.connect_token}"})
    assert response.status_code == 404
    assert connect(emu, "DELETE", "/1").status_code == 404


def test_python_rotation_helpers(emu):
    first = emu.token
    second = emu.generate_token()
    with pytest.raises(ConfigurationError, match="at most 2 active tokens"):
        emu.generate_token()
    emu.revoke_token(first)
    assert emu.token == second
    assert post(emu, "push", [push_record()], token=first).status_code == 401
    assert post(emu, "push", [push_record()], token=second).status_code == 201
    with pytest.raises(ConfigurationError):
        emu.revoke_token(first)


def test_second_integration(emu):
    token = emu.add_integration(8000)
    assert post(emu, "push", [push_record(client_id=8000)], token=token).status_code == 201
    assert post(emu, "push", [push_record(client_id=8000)]).status_code == 403
    assert emu.tables(client_id=8000) == ["customers"]
    assert emu.tables() == []
    emu.pause(8000)
    assert post(emu, "push", [push_record(client_id=8000)], token=token).status_code == 401
    assert post(emu, "push", [push_record()]).status_code == 201


def test_given_tokens_and_limits():
    with pytest.raises(ConfigurationError):
        Emulator(tokens=["at_1", "at_2", "at_3"])
    with pytest.raises(ConfigurationError):
        Emulator(region="mars")
    with Emulator(client_id=1, tokens=["at_one", "at_two"], region="eu") as emu:
        assert (emu.token, emu.active_tokens()) == ("at_one", ["at_one", "at_two"])
        assert post(emu, "push", [push_record(client_id=1)], token="at_two").status_code == 201
        assert "at_one" not in repr(emu)


# Faults ----------------------------------------------------------------------------------------

def test_fail_next_with_retry_after_then_recovers(emu):
    emu.fail_next(2, 503, retry_after=0.5)
    for _ in range(2):
        response = post(emu, "batch", batch_body())
        assert_answer(response, 503, '{"status": "ERROR", "message": "Try again later."}')
        assert response.headers["Retry-After"] == "0.5"
    assert post(emu, "batch", batch_body()).status_code == 201
    assert len(emu.accepted_requests) == 1


def test_fail_next_with_a_custom_body_and_integer_retry_after(emu):
    emu.fail_next(1, 429, body="slow down", retry_after=3)
    response = post(emu, "push", [push_record()])
    assert_answer(response, 429, "slow down", "text/plain")
    assert response.headers["Retry-After"] == "3"
    emu.fail_next(1, 401)
    assert_answer(post(emu, "push", [push_record()]), 401, '{"message":"Not Authorized"}')
    emu.fail_next(1, 413)
    raw = json.dumps([push_record()]).encode()
    assert_answer(post(emu, "push", raw=raw), 413, json.dumps(
        {"status": "ERROR",
         "message": f"Request rejected: request size ({len(raw)} bytes) exceeds the maximum"}))
    assert emu.tables() == []
    with pytest.raises(ConfigurationError):
        emu.hang_next(1, -1)


def test_faults_are_used_in_order_and_cleared(emu):
    emu.fail_next(1, 500)
    emu.fail_next(1, 504)
    emu.fail_next(5, 502)
    assert post(emu, "batch", batch_body()).status_code == 500
    assert post(emu, "batch", batch_body()).status_code == 504
    emu.clear_faults()
    assert post(emu, "batch", batch_body()).status_code == 201


def test_faults_do_not_touch_status_or_connect_endpoints(emu):
    emu.fail_next(1, 503)
    assert requests.get(emu.base_url + "/v2/import/status", timeout=5).status_code == 200
    assert connect(emu, "GET").status_code == 200
    assert post(emu, "batch", batch_body()).status_code == 503


def test_hang_then_503_storing_nothing(emu):
    emu.hang_next(1, 0.2)
    assert_answer(post(emu, "batch", batch_body()), 503,
                  '{"status": "ERROR", "message": "Try again later."}')
    assert emu.tables() == []


def test_hang_longer_than_the_client_timeout(emu):
    emu.hang_next(1, 5)
    with pytest.raises(requests.Timeout):
        requests.post(emu.base_url + "/v2/import/batch", json=batch_body(), timeout=0.2,
                      headers={"Authorization": f"Bearer {emu.token}"})
    assert emu.tables() == []


def test_hang_then_process(emu):
    emu.hang_next(1, 0.1, process=True)
    assert post(emu, "batch", batch_body()).status_code == 201
    assert len(emu.rows("customers")) == 1


def test_drop_closes_the_connection_without_answer(emu):
    with requests.Session() as session:
        assert post(emu, "batch", batch_body(), session=session).status_code == 201
        emu.drop_next(1)
        with pytest.raises(requests.ConnectionError):
            post(emu, "batch", batch_body([message(2, id=2)]), session=session)
        assert [row["id"] for row in emu.rows("customers")] == [1]
        assert emu.request_log[-1].status is None
        assert post(emu, "batch", batch_body(), session=session).status_code == 201


def test_drop_after_processing_stores_the_data(emu):
    emu.drop_next(1, process=True)
    with requests.Session() as session, pytest.raises(requests.ConnectionError):
        post(emu, "push", [push_record()], session=session)
    assert emu.rows("customers") == [{"id": 4, "name": "BMO"}]


def test_stop_interrupts_a_hanging_request():
    emu = Emulator().start()
    emu.hang_next(1, 60)
    outcome: list[Any] = []

    def send():
        try:
            outcome.append(post(emu, "batch", batch_body()).status_code)
        except requests.ConnectionError as error:
            outcome.append(error)

    sender = threading.Thread(target=send)
    sender.start()
    while emu.pending_faults and sender.is_alive():
        threading.Event().wait(0.01)
    emu.stop()
    sender.join(10)
    assert not sender.is_alive()
    assert outcome and outcome[0] != 201


# Control API -----------------------------------------------------------------------------------

def control(emu: Emulator, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, f"{emu.base_url}/_emulator/{path}", json=body, timeout=5)


def test_control_api(emu):
    assert control(emu, "GET", "info").json()["client_id"] == 7723
    assert control(emu, "POST", "faults", {"count": 1, "status": 503,
                                           "retry_after": 2}).json() == {"ok": True}
    response = post(emu, "batch", batch_body())
    assert (response.status_code, response.headers["Retry-After"]) == (503, "2")

    control(emu, "POST", "pause")
    assert post(emu, "batch", batch_body()).status_code == 401
    control(emu, "POST", "unpause")
    control(emu, "POST", "accept_202", {"count": 1})
    assert post(emu, "batch", batch_body()).status_code == 202

    table = control(emu, "GET", "tables/customers").json()
    assert table["rows"] == emu.rows("customers")
    assert table["records"][0]["sequence"] == 1565880017
    assert control(emu, "GET", "tables").json() == {"tables": ["customers"]}
    log = control(emu, "GET", "requests").json()
    assert [entry["status"] for entry in log["log"]] == [503, 401, 202]
    assert log["accepted"][0]["record_count"] == 1

    control(emu, "POST", "drop", {"count": 1})
    with pytest.raises(requests.ConnectionError):
        post(emu, "batch", batch_body())
    control(emu, "POST", "hang", {"count": 1, "seconds": 0.05})
    assert post(emu, "batch", batch_body()).status_code == 503
    control(emu, "POST", "faults", {"count": 3, "status": 500})
    control(emu, "DELETE", "faults")
    assert control(emu, "POST", "reset").json() == {"ok": True}
    assert emu.tables() == [] and emu.request_log == []


def test_control_api_tokens_and_integrations(emu):
    token = control(emu, "POST", "tokens").json()["token"]
    assert emu.active_tokens()[-1] == token
    assert control(emu, "POST", "tokens").status_code == 400
    assert control(emu, "POST", "tokens/revoke", {"token": token}).json() == {"ok": True}
    created = control(emu, "POST", "integrations", {"client_id": 9}).json()
    assert post(emu, "push", [push_record(client_id=9)], token=created["token"]).status_code \
        == 201
    assert control(emu, "GET", "tables?client_id=9").json() == {"tables": ["customers"]}
    foreign = control(emu, "POST", "foreign_region_token").json()["token"]
    assert post(emu, "push", [push_record()], token=foreign).status_code == 401


def test_control_api_errors(emu):
    assert control(emu, "POST", "faults", {"status": "soon"}).status_code == 400
    assert control(emu, "POST", "nothing").status_code == 404
    assert control(emu, "GET", "faults").status_code == 405
    assert control(emu, "POST", "hang", {"seconds": -1}).status_code == 400
    assert emu.request_log == []


# Concurrency, sizes and connections ------------------------------------------------------------

def test_concurrent_requests_are_all_stored(emu):
    errors: list[BaseException] = []

    def send(worker: int) -> None:
        try:
            with requests.Session() as session:
                for index in range(10):
                    record_id = worker * 100 + index
                    response = post(emu, "batch", batch_body([message(1, id=record_id)]),
                                    session=session)
                    assert response.status_code == 201
        except BaseException as error:  # handed to the main thread
            errors.append(error)

    threads = [threading.Thread(target=send, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(emu.rows("customers")) == 80
    assert len(emu.accepted_requests) == 80


def test_connections_are_kept_alive_even_after_refusals(emu):
    connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {emu.token}", "Content-Type": "application/json"}
        statuses = []
        bodies = [json.dumps(batch_body()).encode(), b"x" * 20_000_001, b"{}"]
        for index, body in enumerate(bodies):
            request_headers = headers if index != 2 else {**headers, "Authorization": "Bearer x"}
            connection.request("POST", "/v2/import/batch", body=body, headers=request_headers)
            if index == 0:
                first_socket = connection.sock
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
            assert connection.sock is first_socket
        assert statuses == [201, 413, 401]
    finally:
        connection.close()


def test_sink_accepts_without_parsing_or_storing():
    with Emulator(sink=True) as emu:
        assert post(emu, "batch", raw=b"not json").status_code == 201
        assert post(emu, "validate", raw=b"not json").status_code == 200
        assert post(emu, "batch", raw=b"{}", token="at_bad").status_code == 401
        assert post(emu, "batch", raw=b" " * 20_000_001).status_code == 413
        assert emu.tables() == [] and emu.accepted_requests == []


def test_busy_port_raises_os_error(emu):
    with pytest.raises(OSError):
        Emulator(port=emu.port).start()


def test_restart_after_stop():
    emu = Emulator()
    with pytest.raises(ConfigurationError):
        _ = emu.base_url
    with emu:
        post(emu, "batch", batch_body())
    with emu:
        assert post(emu, "batch", batch_body()).status_code == 201
        assert len(emu.accepted_requests) == 2
        assert emu.environment() == {"STITCH_IMPORT_URL": emu.base_url,
                                     "STITCH_IMPORT_TOKEN": emu.token, "STITCH_CLIENT_ID": "7723"}


def test_the_fixture(stitch_emulator):
    assert stitch_emulator.client_id == 7723
    assert stitch_emulator.environment()["STITCH_IMPORT_URL"] == stitch_emulator.base_url
    assert post(stitch_emulator, "batch", batch_body()).status_code == 201
    assert stitch_emulator.rows("customers")[0]["name"] == "Finn"


def test_nested_data_points_count_toward_the_limit(emu):
    schema = {"properties": {"id": {"type": "integer"}, "nested": {"type": "object"}}}
    nested = {f"f{i}": i for i in range(10_000)}  # with "id": 10,001 leaf values
    response = post(emu, "batch", batch_body([message(1, id=1, nested=nested)], schema=schema))
    assert_answer(response, 400,
                  '{"error": "Record 0 has 10001 data points; the maximum is 10000"}')
    del nested["f0"]
    accepted = post(emu, "batch", batch_body([message(1, id=1, nested=nested)], schema=schema))
    assert accepted.status_code == 201
