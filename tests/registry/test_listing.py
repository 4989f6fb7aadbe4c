"""The listing query language: start, limit, orderby, property."""
import pytest

from runtime.errors import BadRequest
from runtime.listing import parse_list_query
from runtime.schemas import MLINSTANCE, MLSERVICE


def test_defaults():
    q = parse_list_query(MLINSTANCE, {})
    assert (q.start, q.limit) == (0, 25)
    assert q.order == (("created", False),)
    assert q.property_text == "deleted==false"
    assert [(f.field, f.op, f.value) for f in q.filters] == [("deleted", "==", False)]


def test_property_expressions_are_typed():
    q = parse_list_query(MLINSTANCE, {
        "property": "engineId==abc,name!=x y,created>=2019-01-01,created<2020-01-01T10:00:00Z"})
    got = [(f.field, f.op, f.value) for f in q.filters]
    assert got == [("deleted", "==", False), ("engineId", "==", "abc"), ("name", "!=", "x y"),
                   ("created", ">=", "2019-01-01T00:00:00.000Z"),
                   ("created", "<", "2020-01-01T10:00:00.000Z")]


def test_numbers_compare_and_deleted_can_be_asked_for():
    q = parse_list_query(MLSERVICE, {"property": "scoringTimeframe>=7,deleted==true"})
    assert [(f.field, f.op, f.value) for f in q.filters] == [
        ("scoringTimeframe", ">=", 7.0), ("deleted", "==", True)]
    assert q.property_text == "scoringTimeframe>=7,deleted==true"


def test_orderby_fields_and_directions():
    q = parse_list_query(MLINSTANCE, {"orderby": "-updated, name"})
    assert q.order == (("updated", True), ("name", False))
    assert q.orderby_text == "-updated,name"


@pytest.mark.parametrize("params, needle", [
    ({"orderby": "colour"}, "'colour'"),
    ({"property": "colour==red"}, "'colour'"),
    ({"property": "name<abc"}, "'name'"),
    ({"property": "deleted==maybe"}, "'deleted'"),
    ({"property": "created>yesterday"}, "'created'"),
    ({"property": "name"}, "Malformed"),
    ({"limit": "-1"}, "limit"),
    ({"limit": "+1"}, "limit"),
    ({"limit": "101"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"start": "-1"}, "start"),
])
def test_bad_queries_name_the_problem(params, needle):
    with pytest.raises(BadRequest) as info:
        parse_list_query(MLINSTANCE, params)
    assert needle in info.value.detail
    assert info.value.status == 400
