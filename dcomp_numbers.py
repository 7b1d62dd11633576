"""Numbers as a tokenizer writes them: reading them from token ids (the copy parse) and writing a value back as
token ids (the "tokens" read-out), for any tokenizer whose number tokens are digit strings — one digit per token
(SmolLM2), chunks of up to three (LLaMA-3), or whole numbers "0" … "n-1" (the unit encoding's copy parse).

Run-time code: it travels with a checkpoint and imports only torch.

Reading (`NumberTokens.read`). A number is a maximal run of number tokens read as decimal digits ("1", "2", "7"
is 127; LLaMA-3's "100", "07" is 10007). A minus token directly before the run, which does not itself follow a
number token, makes it negative: "-42" and "x = -3" are negative, "5-3" is 5 then 3 (an operator, not a sign). A
token that joins a symbol to the minus ("*-", "=-") is a sign wherever it stands: "12*-7" is 12 and −7.
Values are exact integers (int64) up to `cap` in magnitude; longer numbers are marked unreadable. A group
separator token (",") directly between a run of 1–3 digits and a run of exactly 3 digits joins them, so
"12,345" and "-1,234,567" are one number each; "1, 234", "1234,567" and "1,2345" stay two numbers (the first is
how a list is written). A plus token directly before a number, which does not itself follow a number token, is
its sign: it changes nothing but is marked as a sign ("times +3"; "5+3" and "5 + 3" keep their operator).

Writing (`NumberTokens.spell`). A value becomes its decimal symbols — the sign, then the digits, most significant
first — and the symbols become the tokenizer's tokens: the minus token, then digit chunks of the longest length
the tokenizer has, from the left (as LLaMA-3's pre-tokenizer splits "12345" into "123", "45"). The answer ends
with an end mark, which the read-out writes as "no number token here" (`dcomp_numbers.ReadoutPlan`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

# Digits of the longest int64 (19) and the sign: the most symbols a 64-bit value needs.
MAX_SYMBOLS = 20
# Magnitudes the reader keeps exact: a run's value times a chunk's place value (≤ 999 · 10^15) stays in int64.
MAX_READABLE = 10**15


class NumberTokens(nn.Module):
    """The number tokens of one tokenizer, as lookup tables `(vocab,)` (non-persistent buffers: the config holds the
    token lists, so nothing here is saved).

    Args:
        digit_tokens: digit string → token id ("7" → 22, "007" → 8504). Every string of each length up to the
            longest is present (the config checks it), so any value can be written.
        minus_token_ids: tokens that write "-"; the first is the one `spell` writes.
        joined_minus_token_ids: those of them that write a symbol before the "-" ("*-", "=-", "(-"): a sign even
            directly after a number ("12*-7").
        vocab_size: the tokenizer's vocabulary size (the tables' length).
        cap: values of magnitude ≥ cap are unreadable (at most `MAX_READABLE`).
        group_separator_ids: tokens that write the "," between digit groups ("12,345"; none: no grouping).
        plus_token_ids: tokens that write "+": one is a sign where a minus would be ("+5"; none: never a sign).
    """

    token_value: torch.Tensor  # (vocab,) the digits' value, -1 for other tokens
    token_digits: torch.Tensor  # (vocab,) how many digits the token writes (0 for other tokens)
    is_minus: torch.Tensor  # (vocab,) bool
    is_joined_minus: torch.Tensor  # (vocab,) bool: a symbol, then the minus
    is_group_separator: torch.Tensor  # (vocab,) bool: "," between digit groups
    is_plus: torch.Tensor  # (vocab,) bool
    chunk_tokens: torch.Tensor  # (Σ_L 10^L,) the token of each chunk: offset(L) + value, for L = 1 … chunk

    def __init__(
        self,
        digit_tokens: Mapping[str, int],
        minus_token_ids: Sequence[int],
        vocab_size: int,
        cap: int,
        joined_minus_token_ids: Sequence[int] = (),
        group_separator_ids: Sequence[int] = (),
        plus_token_ids: Sequence[int] = (),
    ):
        super().__init__()
        self.cap = min(cap, MAX_READABLE)
        self.chunk = max(map(len, digit_tokens), default=1)  # digits per written token
        self.minus_token = minus_token_ids[0] if minus_token_ids else -1
        value = torch.full((vocab_size,), -1, dtype=torch.long)
        digits = torch.zeros(vocab_size, dtype=torch.long)
        for text, token in digit_tokens.items():
            value[token], digits[token] = int(text), len(text)
        minus = torch.zeros(vocab_size, dtype=torch.bool)
        minus[list(minus_token_ids)] = True
        joined = torch.zeros(vocab_size, dtype=torch.bool)
        joined[list(joined_minus_token_ids)] = True
        group = torch.zeros(vocab_size, dtype=torch.bool)
        group[list(group_separator_ids)] = True
        plus = torch.zeros(vocab_size, dtype=torch.bool)
        plus[list(plus_token_ids)] = True
        chunks = torch.full((sum(10**length for length in range(1, self.chunk + 1)),), -1, dtype=torch.long)
        for text, token in digit_tokens.items():
            chunks[self.chunk_offset(len(text)) + int(text)] = token
        self.register_buffer("token_value", value, persistent=False)
        self.register_buffer("token_digits", digits, persistent=False)
        self.register_buffer("is_minus", minus, persistent=False)
        self.register_buffer("is_joined_minus", joined, persistent=False)
        self.register_buffer("is_group_separator", group, persistent=False)
        self.register_buffer("is_plus", plus, persistent=False)
        self.register_buffer("chunk_tokens", chunks, persistent=False)

    @staticmethod
    def chunk_offset(length: int) -> int:
        """Where the chunks of `length` digits start in `chunk_tokens`: after every shorter chunk."""
        return sum(10**shorter for shorter in range(1, length))

    # --------------------------------------------------------------------------------------------------- read
    def read(self, input_ids: torch.LongTensor) -> ReadNumbers:
        """The numbers written in `input_ids (batch, seq)` (module docstring)."""
        ids = input_ids.clamp(0, self.token_value.shape[0] - 1)
        token_value = torch.where(input_ids == ids, self.token_value[ids], -1)  # (batch, seq)
        steps = torch.arange(input_ids.shape[1], device=input_ids.device)
        # a group separator joins its two runs into one: it is a number token that writes no digit (value 0, × 1)
        is_number = (token_value >= 0) | self.group_separators(input_ids, token_value >= 0, steps)
        token_value = token_value.clamp_min(0)
        shift = torch.pow(torch.full_like(token_value, 10), self.token_digits[ids])  # 10 ** digits of the token
        before = nn.functional.pad(is_number[:, :-1], (1, 0), value=False)
        is_first = is_number & ~before
        run_start = torch.where(is_first, steps, 0).cummax(-1).values  # (batch, seq): where the current run began
        place = steps - run_start  # index of the token within its run
        # value_t = Σ_k token_value_{t-k} · 10^(digits of tokens t-k+1 … t), k up to the longest run (a few
        # tokens), not a scan over the sequence; past the cap only "is it ≥ cap" matters, so both are capped.
        value, scale = torch.zeros_like(token_value), torch.ones_like(token_value)
        for k in range(int(place[is_number].max()) + 1 if bool(is_number.any()) else 0):
            earlier = nn.functional.pad(token_value[:, : token_value.shape[1] - k], (k, 0))  # token_value_{t-k}
            value = torch.where(is_number & (place >= k), value + earlier * scale, value).clamp(max=self.cap)
            scale = (scale * nn.functional.pad(shift[:, : shift.shape[1] - k], (k, 0), value=1)).clamp(max=self.cap)
        # The sign: a minus token right before the run's first token, which does not itself follow a number token
        # unless a symbol is joined before its minus ("12*-7").
        minus = torch.where(input_ids == ids, self.is_minus[ids], False)
        joined = torch.where(input_ids == ids, self.is_joined_minus[ids], False)
        sign = (minus & ~before) | joined  # (joined ⊆ minus: the config checks it)
        signed_start = nn.functional.pad(sign[:, :-1], (1, 0), value=False) & is_first
        negative = torch.gather(signed_start, 1, run_start) & is_number
        value = torch.where(negative, -value, value)
        is_last = is_number & ~nn.functional.pad(is_number[:, 1:], (0, 1), value=False)
        readable = is_number & (value.abs() < self.cap)
        # a plus sign: where a bare minus would be a sign, before a run; it writes nothing the value needs
        plus = torch.where(input_ids == ids, self.is_plus[ids], False) & ~before
        plus_start = nn.functional.pad(plus[:, :-1], (1, 0), value=False) & is_first
        # the bare minus or plus before a signed run (a joined minus also writes its symbol, which may vote in the
        # selection)
        is_sign = nn.functional.pad((signed_start | plus_start)[:, 1:], (0, 1), value=False) & ~joined
        return ReadNumbers(value, is_number, is_first, is_last, readable, is_sign)

    def written(self, input_ids: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """`(batch, seq)` bool: whether a digit token stands at or before each position (`valid` positions only, where
        given): where the text has written a number that a program could compute from."""
        digits = self.token_value[input_ids.clamp(0, self.token_value.shape[0] - 1)] >= 0
        if valid is not None:
            digits = digits & valid.bool()
        return digits.cumsum(1) > 0

    def group_separators(self, input_ids: torch.Tensor, is_digit: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """`(batch, seq)` bool: the group separator tokens that stand between a run of 1–3 digits and a run of
        exactly 3 ("12,345"), given the digit tokens `is_digit (batch, seq)` and `steps = arange(seq)`."""
        ids = input_ids.clamp(0, self.token_value.shape[0] - 1)
        separator = torch.where(input_ids == ids, self.is_group_separator[ids], False)
        if not bool(separator.any()):
            return separator
        digits = torch.where(is_digit, self.token_digits[ids], 0)  # (batch, seq) digits each token writes
        before = nn.functional.pad(is_digit[:, :-1], (1, 0), value=False)
        after = nn.functional.pad(is_digit[:, 1:], (0, 1), value=False)
        start = torch.where(is_digit & ~before, steps, 0).cummax(-1).values  # where the digit run began
        total = digits.cumsum(-1)
        upto = total - torch.gather(total - digits, 1, start)  # digits of the run up to each token
        last = torch.where(is_digit & ~after, steps, steps.shape[0] - 1).flip(-1).cummin(-1).values.flip(-1)
        run_digits = torch.where(is_digit, torch.gather(upto, 1, last), 0)  # digits of each token's whole run
        digits_before = nn.functional.pad(run_digits[:, :-1], (1, 0))  # the run that ends just before
        digits_after = nn.functional.pad(run_digits[:, 1:], (0, 1))  # the run that starts just after
        return separator & (digits_before >= 1) & (digits_before <= 3) & (digits_after == 3)

    # -------------------------------------------------------------------------------------------------- write
    def symbols(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Integers `(P,)` → their decimal digits `(P, 19)` most significant first (0 after the last), the digit
        counts `(P,)` and the signs `(P,)` bool (negative). Exact for every int64, −2^63 included."""
        values = values.long()
        rest, digits = values, []
        for _ in range(MAX_SYMBOLS - 1):  # truncating division keeps the sign, so no |−2^63| overflow
            digits.append(torch.fmod(rest, 10).abs())
            rest = torch.div(rest, 10, rounding_mode="trunc")
        least_first = torch.stack(digits, -1)  # (P, 19)
        nonzero = least_first != 0
        positions = torch.arange(MAX_SYMBOLS - 1, device=values.device)
        count = torch.where(nonzero, positions + 1, 1).amax(-1)  # (P,): 1 for zero
        # most significant first: digit j of the value is least_first[count - 1 - j]
        index = (count[:, None] - 1 - positions).clamp_min(0)
        most_first = torch.gather(least_first, 1, index) * (positions < count[:, None])
        return most_first, count, values < 0

    def spell(self, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Integers `(P,)` → the tokens that write them `(P, MAX_SYMBOLS)` (-1 after the last) and their counts
        `(P,)`: the minus token for a negative value, then the digit chunks from the left."""
        digits, count, negative = self.symbols(values)
        chunk, width = self.chunk, digits.shape[1]
        chunks = -(-count // chunk)  # (P,) ceil
        columns = []
        for start in range(0, width, chunk):  # chunk j covers digits [j·chunk, j·chunk + chunk) ∩ [0, count)
            length = (count - start).clamp(0, chunk)  # (P,)
            value = torch.zeros_like(count)
            for offset in range(chunk):
                inside = offset < length
                column = digits[:, min(start + offset, width - 1)]
                value = torch.where(inside, value * 10 + column, value)
            offsets = torch.as_tensor(
                [self.chunk_offset(max(1, int(L))) for L in range(chunk + 1)], device=count.device
            )
            token = self.chunk_tokens[(offsets[length] + value).clamp(0, self.chunk_tokens.shape[0] - 1)]
            columns.append(torch.where(length > 0, token, -1))
        tokens = torch.stack(columns, -1)  # (P, ⌈19 / chunk⌉)
        sign = torch.where(negative, self.minus_token, -1)[:, None]
        tokens = torch.cat([sign, tokens], -1)
        # drop the sign column where there is no sign: shift those rows left by one
        shifted = torch.cat([tokens[:, 1:], torch.full_like(tokens[:, :1], -1)], -1)
        tokens = torch.where(negative[:, None], tokens, shifted)
        tokens = nn.functional.pad(tokens, (0, MAX_SYMBOLS - tokens.shape[1]), value=-1)
        return tokens, chunks + negative.long()


@dataclass
class ReadNumbers:
    """What `NumberTokens.read` found, each `(batch, seq)`: at each number token the signed value of its run's
    digits up to it (0 elsewhere); the number tokens; the first and last token of each run; where the value is
    readable (a number token whose magnitude is below the cap); and the bare minus and plus tokens read as a
    number's sign."""

    value: torch.Tensor
    is_number: torch.Tensor
    is_first: torch.Tensor
    is_last: torch.Tensor
    readable: torch.Tensor
    is_sign: torch.Tensor


@dataclass
class ReadoutPlan:
    """The answers being written, one per sequence: the "tokens" read-out's state between forward calls (kept in
    the generation cache, `LlamaDCompComputer`). The answer computed at absolute position `start` is written at
    positions start, start + 1, …: position start + k predicts `tokens[k]` for k < `length`, and at start + length
    the end mark (no number token). It stops at `stop` (exclusive), the first position whose token is not the one
    the answer wrote there (`followed`): the text left the answer (a prompt goes on after a number, a sampled token
    differs), so what comes next is not that answer and may start another computation."""

    start: torch.Tensor  # (batch,) absolute position of the computation; -1: none yet
    tokens: torch.Tensor  # (batch, width ≥ MAX_SYMBOLS: a list is longer) the answer's tokens, -1 after the last
    length: torch.Tensor  # (batch,)
    stop: torch.Tensor  # (batch,) absolute position where the answer stops covering (start + length + 1 at most)

    @classmethod
    def empty(cls, batch_size: int, device) -> ReadoutPlan:
        start = torch.full((batch_size,), -1, dtype=torch.long, device=device)
        tokens = torch.full((batch_size, MAX_SYMBOLS), -1, dtype=torch.long, device=device)
        return cls(start, tokens, torch.zeros_like(start), torch.zeros_like(start))

    def covers(self, positions: torch.Tensor) -> torch.Tensor:
        """`positions (batch, seq)` absolute → bool: inside an answer being written (its end mark included)."""
        offset = positions - self.start[:, None]
        return (self.start[:, None] >= 0) & (offset >= 0) & (positions < self.stop[:, None])

    def followed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> ReadoutPlan:
        """The plan with `stop` moved to the first of `positions (seq,)` (absolute, holding `input_ids (batch,
        seq)`) inside an answer whose token differs from the one written before it: position start + k + 1 must
        hold `tokens[k]` (k < length)."""
        k = positions[None] - self.start[:, None] - 1  # (batch, seq): the answer token this position should hold
        expected = self.tokens.gather(1, k.clamp(0, self.tokens.shape[1] - 1))
        left = self.covers(positions.expand(self.start.shape[0], -1)) & (k >= 0) & (k < self.length[:, None])
        left = left & (input_ids != expected)
        first = torch.where(left, positions[None], self.stop[:, None]).amin(1)  # (batch,)
        return ReadoutPlan(self.start, self.tokens, self.length, torch.minimum(self.stop, first))

    def assign(self, row: int, start: int, tokens: torch.Tensor, length: int) -> ReadoutPlan:
        """A new plan whose sequence `row` writes `tokens (width,)` (-1 after the first `length`) from `start`; the
        token table widens to the longer of the two (a list answer is longer than one number)."""
        width = max(self.tokens.shape[1], tokens.shape[0])
        table = nn.functional.pad(self.tokens, (0, width - self.tokens.shape[1]), value=-1)
        table = table.index_copy(
            0,
            torch.tensor([row], device=table.device),
            nn.functional.pad(tokens, (0, width - tokens.shape[0]), value=-1)[None],
        )
        index = torch.tensor([row], device=self.start.device)
        return ReadoutPlan(
            self.start.index_fill(0, index, start),
            table,
            self.length.index_fill(0, index, length),
            self.stop.index_fill(0, index, start + length + 1),
        )

    def select(self, rows: torch.Tensor) -> ReadoutPlan:
        """The plans of the sequences `rows` (a batch reordered or shrunk, e.g. by beam search)."""
        return ReadoutPlan(self.start[rows], self.tokens[rows], self.length[rows], self.stop[rows])
