"""OData link rewriting: only link values change, every other byte stays as it was."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.upstream.odata import LINK_ANNOTATIONS, rewrite_links

TENANT = "https://tenant.example.com/HEAT"
PUBLIC = "http://127.0.0.1:8080/ivanti"


def rewrite(text: str, upstream: str = TENANT, public: str = PUBLIC) -> str | None:
    result = rewrite_links(text.encode(), upstream, public)
    return None if result is None else result.decode()


IVANTI_PAGE = """{
  "@odata.context" : "https://tenant.example.com/HEAT/api/odata/$metadata#incidents",
  "@odata.count": 2,
  "@odata.nextLink":"https://tenant.example.com/HEAT/api/odata/businessobject/incidents?$top=2&$skip=2",
  "value": [
    {"@odata.id": "https://tenant.example.com/HEAT/api/odata/businessobject/incidents('A1')",
     "@odata.type": "#Ivanti.Incident",  "@odata.etag": "W/\\"1\\"",
     "Subject": "see https://tenant.example.com/HEAT/api/odata/businessobject/incidents('A1')",
     "Owner@odata.navigationLink": "https://tenant.example.com/HEAT/api/odata/employees('E7')",
     "Notes": "caf\\u00e9 \\ud83d\\ude00 \u00fcber",   "Count": 1.50e2},
    {"@odata.id":"https://elsewhere.example.com/HEAT/x", "RecId": null}
  ]
}
"""


def test_an_ivanti_page_changes_only_in_its_link_values() -> None:
    expected = (
        IVANTI_PAGE.replace(
            '"@odata.context" : "https://tenant.example.com/HEAT/',
            f'"@odata.context" : "{PUBLIC}/',
        )
        .replace(
            '"@odata.nextLink":"https://tenant.example.com/HEAT/', f'"@odata.nextLink":"{PUBLIC}/'
        )
        .replace('{"@odata.id": "https://tenant.example.com/HEAT/', f'{{"@odata.id": "{PUBLIC}/')
        .replace(
            '"Owner@odata.navigationLink": "https://tenant.example.com/HEAT/',
            f'"Owner@odata.navigationLink": "{PUBLIC}/',
        )
    )
    assert expected.count(PUBLIC) == 4
    assert rewrite(IVANTI_PAGE) == expected
    page = json.loads(expected)
    assert page["value"][0]["Subject"].startswith("see https://tenant.example.com/HEAT/")
    assert page["value"][1]["@odata.id"] == "https://elsewhere.example.com/HEAT/x"


def test_escaped_slashes_stay_escaped() -> None:
    body = json.dumps({"@odata.context": TENANT + "/api/odata/$metadata#incidents"})
    escaped = body.replace("/", "\\/")
    assert "https:\\/\\/tenant.example.com\\/HEAT\\/api" in escaped
    result = rewrite(escaped)
    link = "http:\\/\\/127.0.0.1:8080\\/ivanti\\/api\\/odata\\/$metadata#incidents"
    assert result == '{"@odata.context": "' + link + '"}'
    assert json.loads(result)["@odata.context"] == PUBLIC + "/api/odata/$metadata#incidents"


def test_any_escape_in_the_base_is_recognised() -> None:
    body = '{"@odata.id": "\\u0068ttps:\\/\\/tenant.example.com\\u002fHEAT/x(\'1\')"}'
    result = rewrite(body)
    assert result is not None
    assert json.loads(result) == {"@odata.id": PUBLIC + "/x('1')"}
    assert result.endswith("/x('1')\"}")  # the rest of the value as it was written


def test_an_escape_right_after_the_base_is_read_as_what_it_means() -> None:
    # "\\/" after the base is a slash: a boundary; "\\u002e" is a dot: none.
    unchanged = '"@odata.context": "' + TENANT + '\\u002e"'
    body = '{"@odata.id": "' + TENANT + '\\/x", ' + unchanged + "}"
    assert rewrite(body) == '{"@odata.id": "' + PUBLIC + '\\/x", ' + unchanged + "}"


def test_escaped_key_names_are_recognised() -> None:
    for key in ("@odata.next\\u004cink", "\\u0040odata.nextLink"):
        body = '{"' + key + '": "https://tenant.example.com/HEAT/p2"}'
        assert rewrite(body) == '{"' + key + '": "' + PUBLIC + '/p2"}'


@pytest.mark.parametrize("term", sorted(LINK_ANNOTATIONS))
def test_every_link_annotation_with_and_without_the_odata_prefix(term: str) -> None:
    for key in (f"@odata.{term}", f"@{term}", f"Prop@odata.{term}"):
        body = json.dumps({key: TENANT + "/z"})
        assert rewrite(body) == json.dumps({key: PUBLIC + "/z"})


@pytest.mark.parametrize(
    "key",
    [
        "@odata.metadataEtag",
        "@odata.type",
        "@odata.etag",
        "@odata.count",
        "odata.nextLink",  # no @: an ordinary property
        "nextLink",
        "@odata.nextLinks",
        "@Org.Vendor.id",
        "Description",
    ],
)
def test_other_fields_keep_the_base(key: str) -> None:
    assert rewrite(json.dumps({key: TENANT + "/z"})) is None


@pytest.mark.parametrize(
    "value",
    [
        "https://tenant.example.com.evil.test/HEAT/x",  # the host goes on
        "https://tenant.example.com:8443/HEAT/x",  # another port
        "https://tenant.example.com/HEATHER/x",  # the path goes on
        "https://tenant.example.com/heat/x",  # paths are case-sensitive
        "http://tenant.example.com/HEAT/x",  # another scheme
        "https://tenant.example.com/",  # above the base
        "incidents?$skip=2",  # relative: resolved against the context, which is rewritten
        "$metadata#incidents",
        "",
    ],
)
def test_links_pointing_elsewhere_are_left_alone(value: str) -> None:
    assert rewrite(json.dumps({"@odata.id": value, "@odata.context": value})) is None


@pytest.mark.parametrize(
    ("value", "result"),
    [
        (TENANT, PUBLIC),
        (TENANT + "/", PUBLIC + "/"),
        (TENANT + "?x=1", PUBLIC + "?x=1"),
        (TENANT + "#frag", PUBLIC + "#frag"),
        ("HTTPS://Tenant.Example.COM/HEAT/x", PUBLIC + "/x"),  # scheme and host: any case
    ],
)
def test_base_boundaries_and_case(value: str, result: str) -> None:
    assert rewrite(json.dumps({"@odata.id": value})) == json.dumps({"@odata.id": result})


def test_trailing_slashes_on_the_bases_do_not_matter() -> None:
    body = json.dumps({"@odata.id": TENANT + "/x"})
    assert rewrite(body, TENANT + "/", PUBLIC + "/") == json.dumps({"@odata.id": PUBLIC + "/x"})


def test_origin_only_base() -> None:
    body = json.dumps({"@odata.context": "https://tenant.example.com/api/odata/$metadata"})
    result = rewrite(body, "https://tenant.example.com", "http://127.0.0.1:9/iv")
    assert result == json.dumps({"@odata.context": "http://127.0.0.1:9/iv/api/odata/$metadata"})


def test_text_that_only_looks_like_a_link_field_is_left_alone() -> None:
    inside_a_string = json.dumps({"note": f'"@odata.id": "{TENANT}/x"', "k": [f"{TENANT}/y"]})
    assert rewrite(inside_a_string) is None
    a_value_not_a_key = json.dumps({"list": ["@odata.id", f"{TENANT}/x"], "v": "@odata.id"})
    assert rewrite(a_value_not_a_key) is None


def test_link_fields_holding_no_string_are_left_alone() -> None:
    body = '{"@odata.id": null, "@odata.context": {"@odata.id": 5}, "@odata.nextLink": ["x"]}'
    assert rewrite(body) is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>https://tenant.example.com/HEAT/x</html>",
        b'{"@odata.id": "https://tenant.example.com/HEAT/x"',  # truncated
        b'{"@odata.id": "https://tenant.example.com/HEAT/x"} trailing',
        b'\xef\xbb\xbf{"@odata.id": "https://tenant.example.com/HEAT/x"}',  # a BOM
        b'{"@odata.id": "https://tenant.example.com/HEAT/\xff"}',  # not UTF-8
        '{"@odata.id": "https://tenant.example.com/HEAT/x"}'.encode("utf-16"),
        b"[1, 2, 3]",
        b'"https://tenant.example.com/HEAT/x"',
    ],
)
def test_bodies_that_are_not_json_or_have_no_links_give_none(body: bytes) -> None:
    assert rewrite_links(body, TENANT, PUBLIC) is None


def test_non_ascii_bytes_elsewhere_are_kept_exactly() -> None:
    body = '{"Subject": "Größe ✓ 😀", "@odata.id": "https://tenant.example.com/HEAT/ü"}'
    result = rewrite_links(body.encode(), TENANT, PUBLIC)
    assert result == body.replace(TENANT, PUBLIC).encode()


# --------------------------------------------------------------------------- property

LINK_KEYS = ["@odata.context", "@odata.nextLink", "@odata.id", "X@odata.navigationLink"]
SUFFIXES = st.one_of(
    st.just(""),
    st.tuples(st.sampled_from("/?#"), st.text(max_size=12)).map("".join),
)
ELSEWHERE = st.sampled_from(
    [
        "https://elsewhere.example.com/HEAT/x",
        "https://tenant.example.com/HEATHER",
        "incidents?$skip=2",
        "",
    ]
)
PLAIN_KEYS = st.text(max_size=8).filter(lambda key: "@" not in key)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
    SUFFIXES.map(lambda s: TENANT + s),  # the base in an ordinary field: untouched
)


def documents() -> st.SearchStrategy[Any]:
    def objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        links = st.dictionaries(
            st.sampled_from(LINK_KEYS),
            st.one_of(SUFFIXES.map(lambda s: TENANT + s), ELSEWHERE),
            max_size=3,
        )
        plain = st.dictionaries(PLAIN_KEYS, children, max_size=4)
        return st.tuples(links, plain).map(lambda pair: {**pair[0], **pair[1]})

    return st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | objects(c), max_leaves=20)


def expected(doc: Any) -> Any:
    if isinstance(doc, list):
        return [expected(item) for item in doc]
    if not isinstance(doc, dict):
        return doc
    out = {}
    for key, value in doc.items():
        if key in LINK_KEYS and isinstance(value, str) and value.startswith(TENANT):
            rest = value[len(TENANT) :]
            if rest == "" or rest[0] in "/?#":
                value = PUBLIC + rest
        out[key] = expected(value)
    return out


@given(
    documents(),
    st.sampled_from([None, 0, 2]),
    st.booleans(),
    st.booleans(),
    st.sampled_from([(", ", ": "), (",", ":"), (" ,\n", " :\t")]),
)
def test_round_trip(
    doc: Any, indent: int | None, ascii_only: bool, escape_slashes: bool, separators: Any
) -> None:
    text = json.dumps(doc, indent=indent, ensure_ascii=ascii_only, separators=separators)
    if escape_slashes:
        text = text.replace("/", "\\/")
    original = text.encode()
    result = rewrite_links(original, TENANT, PUBLIC)
    want = expected(doc)
    if want == doc:
        assert result is None
        return
    assert result is not None
    assert json.loads(result) == want
    # Every byte but the swapped bases survived: swapping back gives the original.
    assert rewrite_links(result, PUBLIC, TENANT) == original
