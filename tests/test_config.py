"""Config validation (issue 26, item 9: settings that would silently do nothing are refused)."""

from __future__ import annotations

import pytest

import scgpcl


@pytest.mark.parametrize("warmup, pretrain", [(200, 200), (250, 200)])
def test_warmup_at_or_beyond_pretraining_is_refused(warmup, pretrain):
    # the prototypical loss starts after the warm-up: with warmup_rounds >= pretrain_rounds it never runs
    config = scgpcl.faithful().override(warmup_rounds=warmup, pretrain_rounds=pretrain)
    with pytest.raises(ValueError, match=r"warmup_rounds.*pretrain_rounds"):
        config.validate()
    config.override(lambda_proto=0.0).validate()  # fine without the prototypical loss


def test_warmup_below_pretraining_is_accepted():
    scgpcl.faithful().override(warmup_rounds=199, pretrain_rounds=200).validate()
    scgpcl.fast().validate()


def test_a_target_sum_that_choose_target_sum_would_discard_is_refused():
    # choose_target_sum picks 0 or 10000 and overwrites target_sum: another explicit value would be lost
    with pytest.raises(ValueError, match=r"target_sum=5000 with choose_target_sum=True .*drop one of the two"):
        scgpcl.recommended().override(choose_target_sum=True, target_sum=5000.0).validate()
    for target in (0.0, 1e4):
        scgpcl.recommended().override(choose_target_sum=True, target_sum=target).validate()
    scgpcl.recommended().override(target_sum=5000.0).validate()  # fine without the choice


def test_a_target_sum_given_alone_turns_the_default_choice_of_the_scaling_off():
    # the default chooses the scaling; a user who asks for one scaling must get it, not the choice
    assert scgpcl.recommended().preprocess.choose_target_sum
    for target in (0.0, 1e4, 5000.0):
        pre = scgpcl.recommended().override(target_sum=target).preprocess
        assert pre.target_sum == target and not pre.choose_target_sum
    # both given: both kept (and 0 / 10000 stay valid candidates for the choice)
    assert scgpcl.recommended().override(target_sum=1e4, choose_target_sum=True).preprocess.choose_target_sum
    # another option leaves the choice alone; the reference's settings never choose
    assert scgpcl.recommended().override(lr=1e-3).preprocess.choose_target_sum
    assert not scgpcl.faithful().preprocess.choose_target_sum and scgpcl.faithful().train.min_round_steps == 1


def test_a_config_saved_before_the_choice_of_scaling_and_longer_rounds_reads_as_it_ran():
    # both became defaults on 2026-12-05; a recorded config without them ran without the choice, 1-step rounds
    old = scgpcl.recommended().to_dict()
    del old["preprocess"]["choose_target_sum"], old["train"]["min_round_steps"]
    cfg = scgpcl.SCGPCLConfig.from_dict(old)
    assert not cfg.preprocess.choose_target_sum and cfg.train.min_round_steps == 1
    again = scgpcl.SCGPCLConfig.from_dict(scgpcl.recommended().to_dict())  # a current one keeps its values
    assert again.preprocess.choose_target_sum and again.train.min_round_steps == 5


def test_a_config_saved_before_lambda_ins_cells_reads_with_the_loss_unscaled():
    # the scaling became the default on 2026-12-05; the reference's settings never scale
    assert scgpcl.recommended().train.lambda_ins_cells == 768 and scgpcl.faithful().train.lambda_ins_cells == 0
    assert scgpcl.recommended().train.lambda_ins_power == pytest.approx(4.0)
    old = scgpcl.recommended().to_dict()
    del old["train"]["lambda_ins_cells"], old["train"]["lambda_ins_power"]
    assert scgpcl.SCGPCLConfig.from_dict(old).train.lambda_ins_cells == 0
    linear = scgpcl.recommended().to_dict()  # saved between the two options: the linear scaling below 512 cells
    linear["train"]["lambda_ins_cells"] = 512
    del linear["train"]["lambda_ins_power"]
    read = scgpcl.SCGPCLConfig.from_dict(linear).train
    assert read.lambda_ins_cells == 512 and read.lambda_ins_power == 1.0
    square = scgpcl.recommended().override(lambda_ins_cells=512, lambda_ins_power=2.0).to_dict()  # 2026-12-05 to -06
    read = scgpcl.SCGPCLConfig.from_dict(square).train
    assert read.lambda_ins_cells == 512 and read.lambda_ins_power == pytest.approx(2.0)
    again = scgpcl.SCGPCLConfig.from_dict(scgpcl.recommended().to_dict()).train
    assert again.lambda_ins_cells == 768 and again.lambda_ins_power == pytest.approx(4.0)


def test_a_config_saved_before_min_minibatches_reads_with_full_size_minibatches():
    old = scgpcl.recommended().override(min_minibatches=4).to_dict()
    del old["sampler"]["min_minibatches"]
    assert scgpcl.SCGPCLConfig.from_dict(old).sampler.min_minibatches == 0  # what it ran with
    again = scgpcl.SCGPCLConfig.from_dict(scgpcl.recommended().override(min_minibatches=4).to_dict())
    assert again.sampler.min_minibatches == 4


def test_the_configuration_a_run_records_reads_back_and_stray_keys_are_errors(small_toy, tmp_path):
    # from_dict took uns['scgpcl']['params']['config'] (flat 'section.option' keys) and silently returned the
    # defaults: pretrain_rounds=3 came back as 25
    import anndata as ad

    from helpers import TINY

    a = small_toy.copy()
    # loss_weights is a dict-valued option: it is recorded one level deeper ('train.loss_weights.zinb')
    scgpcl.tl.cluster(a, n_clusters=3, progress=False, loss_weights={"zinb": 0.5}, **TINY)
    a.write_h5ad(tmp_path / "o.h5ad")
    flat = dict(ad.read_h5ad(tmp_path / "o.h5ad").uns["scgpcl"]["params"]["config"])
    assert "train.pretrain_rounds" in flat and not isinstance(flat["model.encoder_dims"], (list, tuple))  # an array
    back = scgpcl.SCGPCLConfig.from_dict(flat)
    assert back.train.pretrain_rounds == 3 and back.model.encoder_dims == (256, 64)
    assert back.train.loss_weights == {"zinb": 0.5}
    back.validate()
    assert scgpcl.SCGPCLConfig.from_dict(back.to_dict()) == back  # to_dict's own form still reads
    for stray, match in (({"bogus": 1}, "unknown configuration key 'bogus'"),
                         ({"train.bogus": 1}, r"unknown TrainConfig option\(s\): \['bogus'\]"),
                         ({"train": 3}, "configuration section 'train' must map option names to values")):
        with pytest.raises(ValueError, match=match):
            scgpcl.SCGPCLConfig.from_dict(stray)


@pytest.mark.parametrize("name, says", [
    ("use_raw", r"pass adata\.raw\.to_adata\(\)"),
    ("resolution", r"takes the number of clusters, not a resolution: pass n_clusters=K, or n_clusters=None"),
    ("use_rep", r"learns its own representation"),
    ("seed", r"pass random_state= instead"),
    ("max_epochs", r"training runs in rounds: pretrain_rounds= and finetune_rounds="),  # was: did you mean max_neighbors?
    ("progress", r"pass it to \.train\(progress=False\)"),
])
def test_options_of_other_tools_say_what_scgpcl_takes_instead(name, says):
    # a new user passed use_raw=True as to scanpy and was told only that every option is a field of recommended()
    with pytest.raises(ValueError, match=rf"unknown option '{name}': .*{says}"):
        scgpcl.recommended().override(**{name: True})
