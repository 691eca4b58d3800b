from hypothesis import given, strategies as st

from gpusched.fairqueue import FairQueue


def test_owners_take_turns_whatever_arrived_first():
    q = FairQueue()
    for i in range(1000):
        q.push(1001, f"alice-{i}")
    q.push(1002, "bob")
    first = [q.pop() for _ in range(3)]
    assert first == ["alice-0", "bob", "alice-1"]
    assert len(q) == 998


def test_a_name_is_queued_once():
    q = FairQueue()
    assert q.push(1, "a") and not q.push(1, "a") and not q.push(2, "a")
    assert "a" in q and q.pop() == "a" and q.pop() is None and "a" not in q


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 50))))
def test_everything_pushed_comes_out_once_and_each_owner_in_order(pushes):
    q = FairQueue()
    want: dict[int, list[str]] = {}
    for owner, n in pushes:
        name = f"{owner}-{n}"
        if q.push(owner, name):
            want.setdefault(owner, []).append(name)
    out = []
    while (name := q.pop()) is not None:
        out.append(name)
    assert sorted(out) == sorted(n for names in want.values() for n in names)
    for owner, names in want.items():
        assert [n for n in out if n.startswith(f"{owner}-")] == names
