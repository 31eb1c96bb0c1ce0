"""timm's model contract on ACC-ViT: classifier access and reset, weight-decay names, activation
checkpointing and the features/head split; and the provenance that ``create`` returns.

The references are independent of our code: timm's own optimizer factory (which reads
``no_weight_decay()``), the parameters' shapes (timm's rule: every 1-d parameter is a norm or a
bias), hashlib for the weights file, and the plain forward pass.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from accvit_med.errors import UserError
from accvit_med.models import classifier_head, create, create_model, reset_classifier
from accvit_med.models.acc_vit import ACCViT, ACCViTConfig
from accvit_med.models.activation_checkpointing import enable_activation_checkpointing

NARROW = ACCViTConfig(16, (16, 32, 32, 32), (1, 2, 1, 1), 16, 0.0)  # femto's layout, fewer channels


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def _model(num_classes: int = 4, fast: bool = True, config: ACCViTConfig = NARROW) -> ACCViT:
    torch.manual_seed(0)
    return ACCViT(config, num_classes=num_classes, fast=fast).eval()


@pytest.mark.parametrize("fast", [True, False])
def test_forward_is_head_of_features(images, fast):
    model = _model(fast=fast)
    with torch.no_grad():
        logits = model(images)
        features = model.forward_features(images)
        assert features.shape == (2, 32, 7, 7)
        assert torch.equal(model.forward_head(features), logits)
        pre_logits = model.forward_head(features, pre_logits=True)
        assert pre_logits.shape == (2, 32)
        assert torch.equal(model.get_classifier()(pre_logits), logits)


def test_reset_classifier_changes_the_head_and_keeps_the_features(images):
    model = _model(num_classes=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        features = model.forward_features(images)
        pre_logits = model.forward_head(features, pre_logits=True)
    old_head = model.get_classifier()
    model.reset_classifier(7)
    head = model.get_classifier()
    assert head is not old_head and isinstance(head, nn.Linear) and (head.in_features, head.out_features) == (32, 7)
    assert classifier_head(model) == ("classifier.5", head)
    with torch.no_grad():
        assert model(images).shape == (2, 7)
        assert torch.equal(model.forward_features(images), features)
        assert torch.equal(model.forward_head(features, pre_logits=True), pre_logits)
        torch.testing.assert_close(model(images), pre_logits @ head.weight.T)
    after = model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], v) for k, v in before.items() if k != "classifier.5.weight")
    # The registry's reset goes through the model's own.
    reset_classifier(model, 3)
    assert model.get_classifier().out_features == 3
    with pytest.raises(ValueError, match="num_classes must be at least 1"):
        model.reset_classifier(0)


@pytest.mark.parametrize("config", [NARROW, ACCViTConfig(16, (16, 32, 32, 32), (1, 1, 1, 1), 16, 0.0,
                                                         "mbconv", "mean", "per_branch"),
                                    ACCViTConfig(16, (16, 32, 32, 32), (1, 1, 1, 1), 16, 0.0, mlp="convnext")])
def test_no_weight_decay_names_norms_biases_and_position_tables(config):
    from accvit_med.training.pretrain.param_groups import param_groups

    model = _model(config=config)
    declared = model.no_weight_decay()
    parameters = dict(model.named_parameters())
    assert declared <= set(parameters)
    # Every 1-d parameter is a norm's scale/shift or a bias; the tables are the only 2-d exclusions.
    expected = {n for n, p in parameters.items() if p.ndim <= 1 or n.endswith("relative_position_bias_table")}
    assert declared == expected
    assert any(n.endswith("relative_position_bias_table") for n in declared)
    groups = {g["name"]: {id(p) for p in g["params"]} for g in param_groups(model, 0.05)}
    assert groups["no_decay"] == {id(parameters[n]) for n in declared}


def test_timm_optimizer_reads_the_same_exclusions():
    optim = pytest.importorskip("timm.optim", reason="timm is the optional extra accvit-med[timm]")
    from accvit_med.training.pretrain.param_groups import param_groups

    model = _model()
    theirs = optim.create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    ours = param_groups(model, 0.05)

    def by_decay(groups: list[dict]) -> dict[float, set[int]]:
        return {g["weight_decay"]: {id(p) for p in g["params"]} for g in groups}

    assert by_decay(theirs.param_groups) == by_decay(ours)


def test_set_grad_checkpointing_recomputes_and_can_be_undone(images):
    plain, checkpointed = _model().train(), _model().train()
    checkpointed.set_grad_checkpointing()
    wrapped = [layer for layer in checkpointed.layers() if "forward" in vars(layer)]
    assert len(wrapped) == sum(NARROW.depths)
    assert enable_activation_checkpointing(checkpointed) == 0  # already done by the model itself
    for model in (plain, checkpointed):
        model(images[:1]).square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.equal(p.grad, q.grad), name
    assert list(plain.state_dict()) == list(checkpointed.state_dict())
    checkpointed.set_grad_checkpointing(False)
    assert not any("forward" in vars(m) for m in checkpointed.modules())
    assert enable_activation_checkpointing(checkpointed) == sum(NARROW.depths)


def test_create_returns_the_weights_provenance(tmp_path):
    random = create("accvit_femto", num_classes=2)
    assert random.weights.to_record() == {"spec": "none", "file": None, "sha256": None}
    path = tmp_path / "femto.pth"
    torch.save(random.model.state_dict(), path)
    loaded = create("accvit_femto", num_classes=2, weights=path)
    assert loaded.weights.to_record() == {"spec": "path", "file": str(path.resolve()),
                                          "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert not hasattr(loaded.model, "inheritance")


def test_model_code_raises_value_error_and_the_registry_a_one_line_user_error():
    with pytest.raises(ValueError, match="drop_path_rate must be in") as caught:
        ACCViT(NARROW, drop_path_rate=1.5)
    assert not isinstance(caught.value, UserError)
    with pytest.raises(UserError, match="cannot build accvit_femto: drop_path_rate must be in"):
        create_model("accvit_femto", drop_path_rate=1.5)
