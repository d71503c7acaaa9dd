"""The trained networks' encoders: built without smp's deprecation warnings, the same network as smp's deprecated name,
and the manifest's ImageNet weights (smp-hub layout) still load into them."""
import warnings

import pytest
import torch

from frozenseg.baselines import nets


@pytest.fixture(autouse=True)
def _fresh_templates():
    """Each test builds its networks anew (build_net caches the initial weights per arch, weights and seed)."""
    nets._template.cache_clear()
    yield
    nets._template.cache_clear()


@pytest.mark.parametrize("arch", list(nets.ARCHS))
def test_each_arch_builds_without_a_deprecation_warning_from_smp(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))            # from scratch: no weights on disk
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        nets.build_net(arch, "auto", seed=0)
    smp = [f"{w.category.__name__}: {w.message}" for w in caught
           if issubclass(w.category, (DeprecationWarning, FutureWarning)) and "segmentation_models_pytorch" in w.filename]
    assert not smp, smp


def test_the_regnet_encoder_is_the_network_smp_builds_for_its_deprecated_name():
    """The switch from ``timm-regnetx_002`` to ``tu-regnetx_002`` moves no number: same weights, same outputs."""
    import segmentation_models_pytorch as smp

    _, kind, encoder, _ = nets.ARCHS["unet_regnetx002"]
    assert encoder.startswith("tu-")
    net, _ = nets.build_net("unet_regnetx002", False, seed=3)
    with warnings.catch_warnings(), torch.random.fork_rng():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.manual_seed(3)
        try:
            old = getattr(smp, kind)(encoder_name="timm-" + encoder[3:], encoder_weights=None, in_channels=3, classes=1,
                                     **nets.ARCH_KWARGS["unet_regnetx002"])
        except KeyError:
            pytest.skip("this smp no longer knows the timm- name; the comparison was made when it did")
    a, b = net.state_dict(), old.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(net.eval()(x), old.eval()(x))


def test_smp_hub_regnet_weights_on_disk_load_into_the_tu_encoder(tmp_path, monkeypatch):
    """data_manifest.yaml's smp_regnetx002_imagenet (smp-hub's timm-regnetx_002 repository: the timm model's keys,
    without the ``model.`` prefix the tu- encoder holds them under) loads and is labelled pretrained."""
    from safetensors.torch import save_file

    from frozenseg.manifest import get_entry, target_path

    ref, _ = nets.build_net("unet_regnetx002", False, seed=5)
    hub_layout = ref.encoder.model.state_dict()
    assert not any(k.startswith("model.") for k in hub_layout)
    folder = target_path(get_entry(nets.ARCHS["unet_regnetx002"][3]), tmp_path)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    save_file({k: v.contiguous() for k, v in hub_layout.items()}, str(folder / "model.safetensors"))
    monkeypatch.setenv("FROZENSEG_DATA", str(tmp_path))
    nets._template.cache_clear()
    net, init = nets.build_net("unet_regnetx002", True, seed=0)
    assert init == nets.PRETRAINED
    got, want = net.encoder.state_dict(), ref.encoder.state_dict()
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in got)
