"""LineSplitter: bytes from a pipe become whole lines, whatever the read boundaries."""

from hypothesis import given, settings
from hypothesis import strategies as st

from dynod.proc.dyno import LineSplitter, exit_status


def feed_all(chunks: list[bytes], limit: int = 10_000) -> list[str]:
    splitter = LineSplitter(limit)
    lines: list[str] = []
    for chunk in chunks:
        lines += splitter.feed(chunk)
    return lines + splitter.flush()


def test_whole_lines_across_reads() -> None:
    assert feed_all([b"hel", b"lo\nwor", b"ld\n", b"\n"]) == ["hello", "world", ""]


def test_partial_last_line_is_kept_at_exit() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\ntwo") == ["one"]
    assert splitter.flush() == ["two"]
    assert splitter.flush() == []


def test_crlf_becomes_lf() -> None:
    assert feed_all([b"a\r\nb\r", b"\nc\n"]) == ["a", "b", "c"]


def test_long_lines_are_split_at_the_limit() -> None:
    lines = feed_all([b"x" * 25_000 + b"\nshort\n"])
    assert [len(line) for line in lines] == [10_000, 10_000, 5_000, 5]


def test_long_unterminated_line_is_handed_out_in_pieces() -> None:
    splitter = LineSplitter(100)
    assert splitter.feed(b"y" * 250) == ["y" * 100, "y" * 100]
    assert splitter.feed(b"y\n") == ["y" * 51]


def test_split_never_cuts_a_utf8_character() -> None:
    text = "é" * 6000  # 12,000 bytes
    lines = feed_all([text.encode() + b"\n"])
    assert "".join(lines) == text
    assert all(len(line.encode()) <= 10_000 for line in lines)


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert feed_all([b"\xff\xfeok\n"]) == ["\ufffd\ufffdok"]


def test_exit_status_of_signals() -> None:
    assert exit_status(0) == 0
    assert exit_status(3) == 3
    assert exit_status(-15) == 143
    assert exit_status(-9) == 137


# Any character but line ends and lone surrogates (which no UTF-8 stream holds).
LINE_CHARACTERS = st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"])


@settings(deadline=None)
@given(
    st.lists(st.text(alphabet=LINE_CHARACTERS, max_size=40), max_size=30),
    st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=20),
)
def test_any_read_boundaries_give_the_same_lines(lines: list[str], cuts: list[int]) -> None:
    data = "".join(line + "\n" for line in lines).encode()
    chunks, i, k = [], 0, 0
    while i < len(data):
        step = cuts[k % len(cuts)]
        chunks.append(data[i : i + step])
        i, k = i + step, k + 1
    assert feed_all(chunks, limit=10_000) == lines
