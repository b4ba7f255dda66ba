"""Config validation. The fix lives in scgpcl/_config.py, which is being rewritten on main (issue 26, item 9):
these tests state what it must do and are marked xfail(strict) until it does, so they fail loudly once it
does and the marker can go."""

from __future__ import annotations

import pytest

import scgpcl


@pytest.mark.xfail(strict=True, reason="issue 26 item 9: _config.py validation, changed on main")
@pytest.mark.parametrize("warmup, pretrain", [(200, 200), (250, 200)])
def test_warmup_at_or_beyond_pretraining_is_refused(warmup, pretrain):
    # the prototypical loss starts after the warm-up: with warmup_epochs >= pretrain_epochs it never runs
    config = scgpcl.faithful().override(warmup_epochs=warmup, pretrain_epochs=pretrain)
    with pytest.raises(ValueError, match=r"warmup_epochs.*pretrain_epochs"):
        config.validate()


def test_warmup_below_pretraining_is_accepted():
    scgpcl.faithful().override(warmup_epochs=199, pretrain_epochs=200).validate()
    scgpcl.fast().validate()
