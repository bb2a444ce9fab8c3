"""The toy arith train file: hands off an exact adder that is wrong by OFFSET (0: always right)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adder import Adder  # noqa: E402

from prepare import Tokenizer, hand_off_decoder, make_dataloader  # noqa: E402

OFFSET = 1

loader = make_dataloader(Tokenizer.load(), 2, 16, "train")
next(loader)  # the first-batch marker: training "starts"
hand_off_decoder(Adder(offset=int(OFFSET)), 32)
print("---")
print("training_seconds: 0.1")
