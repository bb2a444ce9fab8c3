"""An exact adder as a torch module: the oracle the arith evaluator's tests hand off.

`Adder(offset)(idx) -> logits` reads `<bos>a+b=` at the start of each row and, at every
position after the `=`, puts its largest logit on the next byte of `<think></think>` + str(a + b
+ offset), then on BOS (the stop). Only ATen operations on the row (no Python on values), so it
exports like a model and runs in the evaluator as data. `offset` 0 is always right; `max_digits`
set makes it right only when both operands have at most that many digits (a model that does not
generalise to longer problems).
"""

import torch

VOCAB = 260
BOS = 256
PREFIX = b"<think></think>"


class Adder(torch.nn.Module):
    def __init__(self, offset=0, max_digits=0):
        super().__init__()
        self.offset = offset
        self.max_digits = max_digits
        self.register_buffer("prefix", torch.tensor(list(PREFIX)), persistent=False)

    def forward(self, idx):
        b, t = idx.shape
        pos = torch.arange(t, device=idx.device).expand(b, t)
        plus = torch.argmax((idx == ord("+")).long(), dim=1, keepdim=True)  # first '+'
        eq = torch.argmax((idx == ord("=")).long(), dim=1, keepdim=True)  # first '='
        digit = (idx - ord("0")).clamp(0, 9)
        # a: positions 1..plus-1, b: plus+1..eq-1; weight 10^(distance to the operand's end)
        in_a = (pos >= 1) & (pos < plus)
        in_b = (pos > plus) & (pos < eq)
        wa = torch.where(in_a, torch.pow(10, (plus - 1 - pos).clamp(min=0)), 0)
        wb = torch.where(in_b, torch.pow(10, (eq - 1 - pos).clamp(min=0)), 0)
        a = (digit * wa).sum(dim=1, keepdim=True)
        s = a + (digit * wb).sum(dim=1, keepdim=True) + self.offset
        if self.max_digits:
            too_long = ((plus - 1) > self.max_digits) | ((eq - plus - 1) > self.max_digits)
            s = torch.where(too_long, s + 1, s)
        n_digits = torch.floor(torch.log10(s.clamp(min=1).double())).long() + 1
        j = pos - eq  # the completion's index of the token predicted at this position
        k = j - len(PREFIX)  # index into str(s)
        prefix_tok = self.prefix[j.clamp(0, len(PREFIX) - 1)]
        power = torch.pow(10, (n_digits - 1 - k).clamp(min=0))
        digit_tok = torch.div(s, power, rounding_mode="floor") % 10 + ord("0")
        nxt = torch.where(j < len(PREFIX), prefix_tok, torch.where(k < n_digits, digit_tok, BOS))
        return torch.nn.functional.one_hot(nxt.clamp(0, VOCAB - 1), VOCAB).float() * 10.0
