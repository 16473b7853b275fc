"""The test suite's own set-up: how ``.ci/run`` spreads the tests over pytest-xdist's workers
(``tests/conftest.py``) must keep the tests of a module that share a module-scoped fixture on
one worker, and the one polling helper must fail, naming what it waited for."""

from __future__ import annotations

import time

import pytest

from tests.conftest import file_shares_module_state, shares_module_state, wait_for, xdist_scope


def test_every_test_that_shares_module_state_is_scheduled_with_its_whole_file(request):
    root = str(request.config.rootpath)
    items = request.session.items
    # the modules that share a hub are grouped even when this run selected none of their tests
    assert file_shares_module_state(str(request.path.with_name("test_core.py")))
    for item in (item for item in items if shares_module_state(item)):
        path = item.nodeid.split("::", 1)[0]
        assert xdist_scope(root, item.nodeid) == path, item.nodeid
        assert file_shares_module_state(str(item.path)), item.nodeid


def test_a_file_without_module_state_is_spread_test_by_test(request):
    item = request.node
    assert not shares_module_state(item)
    assert xdist_scope(str(request.config.rootpath), item.nodeid) == item.nodeid


def test_wait_for_returns_the_first_truthy_value():
    answers = iter([0, None, [], "done"])
    assert wait_for(lambda: next(answers), 5, "an answer", interval=0.001) == "done"


def test_wait_for_fails_after_the_timeout_naming_what_it_waited_for():
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"timed out after 0.2 s waiting for the moon; last: 0"):
        wait_for(lambda: 0, 0.2, "the moon", interval=0.01)
    assert 0.2 <= time.monotonic() - started < 5
