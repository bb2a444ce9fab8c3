"""The toy arith train file: hands off an exact adder, wrong by OFFSET, and wrong above MAX_DIGITS digits (0: never)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adder import Adder  # noqa: E402

from prepare import Tokenizer, hand_off_decoder, make_dataloader  # noqa: E402

OFFSET = 0
MAX_DIGITS = 6

loader = make_dataloader(Tokenizer.load(), 2, 16, "train")
next(loader)  # the first-batch marker: training "starts"
hand_off_decoder(Adder(offset=int(OFFSET), max_digits=int(MAX_DIGITS)), 32)
print("---")
print("training_seconds: 0.1")
