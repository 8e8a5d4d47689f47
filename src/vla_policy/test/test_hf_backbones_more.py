"""hf_vlm adapters Florence-2, Kosmos-2, LLaVA-1.5 / NeXT / OneVision: tiny offline configs on CPU.

Each arch: trains (loss falls, gradients reach its parts), contract shapes, its image path and sequence
mapping against the HF model's own code, every VLM structure, freezing / LoRA by config,
``backbone.pretrained: <dir>`` from a ``save_pretrained`` directory + HF tokenizer read through YAML
(identical outputs; another arch's directory is refused) and the VLA checkpoint round trip.
"""
import pytest
import torch

from vla_policy.models.config import VLAConfig
from vla_policy.models.registry import make_backbone
from vla_policy.models.vla import VLA

ARCHS = ['florence2', 'kosmos2', 'llava', 'llava_next', 'llava_onevision']
S, PATCH, V, D = 32, 8, 24, 32
H = S // PATCH   # 4x4 patches per image
# image tokens per image at S / PATCH = 4 (see each module's docstring for the layout)
P = {'florence2': H * H + 1,                  # DaViT map + mean-pooled token
     'kosmos2': H * H // 4,                   # latent queries, 4:1 as Kosmos-2 (scale_factor 2)
     'llava': H * H,                          # CLS dropped
     'llava_next': H * H + H * (H + 1),       # base view + one AnyRes tile with a newline per row
     'llava_onevision': H * H + 1}            # base view + image_newline (multi-image layout)
# trainable parameters that get no gradient from the one-step continuous feature, by design:
# the LLaVA ViT's post_layernorm (LLaVA reads hidden_states) and an untied LM head
NO_GRAD = {'florence2': (), 'kosmos2': (),
           'llava': ('post_layernorm', 'lm_head'), 'llava_next': ('post_layernorm', 'lm_head'),
           'llava_onevision': ('post_layernorm', 'lm_head')}
MODEL_TYPE = {'florence2': 'florence2', 'kosmos2': 'kosmos-2', 'llava': 'llava', 'llava_next': 'llava_next',
              'llava_onevision': 'llava_onevision'}


def make_cfg(arch, n_obs=2, **bb):
    b = dict(name='hf_vlm', hf_arch=arch, vocab_size=V, image_size=S, patch_size=PATCH, vision_hidden=32,
             vision_layers=1, text_hidden=D, text_layers=1, num_heads=2)
    b.update(bb)
    return VLAConfig.from_dict(dict(backbone=b, head=dict(hidden=32), action_dim=3, state_dim=3,
                                    chunk=dict(n_obs_steps=n_obs, chunk_size=4, n_action_steps=2)))


def make_batch(bsz=3, n_img=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(bsz, 6, dtype=torch.long)
    mask[0, 4:] = 0
    return dict(images=torch.rand(bsz, n_img, 3, S, S, generator=g),
                token_ids=torch.randint(3, V, (bsz, 6), generator=g) * mask, attention_mask=mask,
                state=torch.randn(bsz, n_img, 3, generator=g), actions=torch.rand(bsz, 4, 3, generator=g) * 2 - 1,
                action_is_pad=torch.zeros(bsz, 4, dtype=torch.bool))


def parts(bb):
    return {'vision': bb.vision_tower, 'projector': bb.projector, 'text': bb.text_tower}


@pytest.mark.parametrize('arch', ARCHS)
def test_tiny_trains_and_gradients_reach_every_part(arch):
    torch.manual_seed(0)
    model = VLA(make_cfg(arch))
    batch = make_batch()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    vis0 = [p.detach().clone() for p in model.backbone.vision_tower.parameters()]
    losses = []
    for step in range(3):
        opt.zero_grad()
        loss, _ = model.loss(batch)
        loss.backward()
        if step == 0:
            missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None
                       and not any(k in n for k in NO_GRAD[arch])]
            assert missing == []
            for name, mod in parts(model.backbone).items():
                assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters()), name
            assert model.backbone.act_embedding.grad.abs().sum() > 0
            assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        final, _ = model.loss(batch)
    assert final.item() < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(vis0, model.backbone.vision_tower.parameters()))


@pytest.mark.parametrize('arch', ARCHS)
def test_contract_shapes_and_padding(arch):
    torch.manual_seed(0)
    bb = make_backbone(make_cfg(arch)).eval()
    batch = make_batch()
    im, ids, mask = batch['images'], batch['token_ids'], batch['attention_mask']
    assert bb.is_vlm and bb.out_dim == bb.hidden_size == D and bb.vocab_size == V
    assert bb.image_tokens_per_image == P[arch]
    with torch.no_grad():
        img = bb.encode_images(im)
        assert img.shape == (3, 2 * P[arch], D)
        txt = bb.embed_tokens(ids)
        assert txt.shape == (3, 6, D)
        seq = torch.cat([img, txt], 1)
        full_mask = torch.cat([torch.ones(3, img.shape[1], dtype=torch.long), mask], 1)
        hidden = bb.fused_forward(seq, full_mask, prefix_len=img.shape[1])
        assert hidden.shape == (3, 2 * P[arch] + 6, D)
        assert bb.lm_logits(hidden).shape == (3, 2 * P[arch] + 6, V)
        feat = bb(im, ids, mask)
        assert feat.shape == (3, D) and torch.isfinite(feat).all()
        # padded instruction positions are masked out: their token ids do not matter
        ids2 = ids.clone()
        ids2[0, 4:] = 5
        assert torch.allclose(bb(im, ids2, mask), feat, atol=1e-6)
        # ... but a real token and the image do
        ids3 = ids.clone()
        ids3[0, 1] = 3 if ids[0, 1] != 3 else 4
        assert (bb(im, ids3, mask)[0] - feat[0]).abs().max() > 1e-6
        assert (bb(im.flip(-1), ids, mask)[0] - feat[0]).abs().max() > 1e-6   # image features start damped (x0.05)
    with pytest.raises(ValueError, match='images per sample'):
        bb(im[:, :1], ids, mask)


@pytest.mark.parametrize('structure,head', [('one_step_discrete', 'none'), ('interleaved', 'mlp'),
                                            ('policy_head', 'lstm')])
@pytest.mark.parametrize('arch', ARCHS)
def test_other_structures_train_and_infer(arch, structure, head):
    """Florence-2's encoder/decoder split and the LLaVA image layouts serve every VLM structure."""
    torch.manual_seed(0)
    d = make_cfg(arch).to_dict()
    d['structure'], d['head']['name'] = structure, head
    model = VLA(VLAConfig.from_dict(d))
    batch = make_batch()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss, _ = model.loss(batch)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with torch.no_grad():
        out = model(batch)
    assert out.shape == (3, 4, 3) and torch.isfinite(out).all()
    if structure == 'one_step_discrete':   # decoded bin centres lie in the normalized range
        assert out.abs().max() <= 1.0


def test_florence2_maps_prefix_to_encoder_and_rest_to_decoder():
    torch.manual_seed(0)
    bb = make_backbone(make_cfg('florence2')).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 10, D, generator=g)
    dx = torch.randn(D, generator=g)   # not a constant shift: LayerNorms would remove that
    m = torch.ones(2, 10, dtype=torch.long)
    m[1, 5] = 0
    with torch.no_grad():
        h = bb.fused_forward(x, m, prefix_len=7)
        out = bb.model.language_model(inputs_embeds=x[:, :7], attention_mask=m[:, :7], decoder_inputs_embeds=x[:, 7:],
                                      decoder_attention_mask=m[:, 7:], use_cache=False)   # HF BartModel
        assert torch.allclose(h[:, :7], out.encoder_last_hidden_state, atol=1e-5)
        assert torch.allclose(h[:, 7:], out.last_hidden_state, atol=1e-5)
        y = x.clone()
        y[:, 6] += dx  # last prefix position: the bidirectional encoder carries it back to position 0
        assert not torch.allclose(bb.fused_forward(y, m, prefix_len=7)[:, 0], h[:, 0], atol=1e-4)
        y = x.clone()
        y[:, 9] += dx  # last decoder position: causal, nothing before it changes
        h2 = bb.fused_forward(y, m, prefix_len=7)
        assert torch.allclose(h2[:, :9], h[:, :9], atol=1e-5) and not torch.allclose(h2[:, 9], h[:, 9], atol=1e-4)
        # no prefix: the decoder alone, causal over everything
        c = bb.fused_forward(x, m)
        c2 = bb.fused_forward(torch.cat([x[:, :9], x[:, 9:] + dx], 1), m)
        assert c.shape == (2, 10, D) and torch.allclose(c2[:, :9], c[:, :9], atol=1e-5)
        assert torch.equal(bb.fused_forward(x, m, prefix_len=10), bb.fused_forward(x, m, prefix_len=10))
    with pytest.raises(ValueError, match='prefix_len'):
        bb.fused_forward(x, m, prefix_len=11)


@pytest.mark.parametrize('arch', ['kosmos2', 'llava', 'llava_next', 'llava_onevision'])
def test_decoder_only_archs_are_causal(arch):
    torch.manual_seed(0)
    bb = make_backbone(make_cfg(arch)).eval()
    x = torch.randn(2, 8, D, generator=torch.Generator().manual_seed(2))
    m = torch.ones(2, 8, dtype=torch.long)
    with torch.no_grad():
        h = bb.fused_forward(x, m, prefix_len=6)
        y = x.clone()
        y[:, 5] += torch.randn(D, generator=torch.Generator().manual_seed(5))   # not a constant (LayerNorm)
        h2 = bb.fused_forward(y, m, prefix_len=6)
    assert torch.allclose(h2[:, :5], h[:, :5], atol=1e-5) and not torch.allclose(h2[:, 5:], h[:, 5:], atol=1e-4)


@pytest.mark.parametrize('arch', ['kosmos2', 'llava', 'llava_next', 'llava_onevision'])
def test_image_path_matches_the_hf_model(arch):
    """Our concatenated image tokens equal what the HF model computes for the same pixels."""
    torch.manual_seed(0)
    bb = make_backbone(make_cfg(arch)).eval()
    pix = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = bb.encode_pixels(pix)  # (2, P, D)
        assert ours.shape == (2, P[arch], D)
        sizes = torch.tensor([[S, S], [S, S]])
        if arch == 'llava':
            ref = torch.stack(list(bb.model.get_image_features(pixel_values=pix).pooler_output))
        elif arch == 'llava_next':   # AnyRes with pinpoints [[S, S]]: base view + one tile (the same image)
            ref = torch.stack(list(bb.model.get_image_features(
                pixel_values=torch.stack([pix, pix], 1), image_sizes=sizes).pooler_output))
        elif arch == 'llava_onevision':   # a sample with 2 images: HF's multi-image path, one view each
            ref = torch.stack(list(bb.model.get_image_features(
                pixel_values=pix[:, None], image_sizes=sizes, batch_num_images=torch.tensor([2])).pooler_output))
        else:   # Kosmos-2: the HF forward scatters image embeds into placeholder positions, then scales
            ids = torch.randint(3, V, (2, 5), generator=torch.Generator().manual_seed(4))
            placeholder = torch.full((2, P[arch]), 3)
            out = bb.model(pixel_values=pix, input_ids=torch.cat([placeholder, ids], 1),
                           image_embeds_position_mask=torch.cat([torch.ones_like(placeholder),
                                                                 torch.zeros_like(ids)], 1))
            ref = out.image_embeds
            seq = torch.cat([ours, bb.embed_tokens(ids)], 1)
            logits = bb.lm_logits(bb.fused_forward(seq, torch.ones(2, seq.shape[1], dtype=torch.long)))
            assert torch.allclose(logits, out.logits, atol=1e-5)
    assert ref.shape == ours.shape and torch.allclose(ours, ref, atol=1e-5)


def test_llava_strategy_full_keeps_cls_and_anyres_refuses_it():
    from vla_policy.models.backbones.hf_vlm import tiny_hf_config
    for arch in ('llava', 'llava_next'):
        cfg = make_cfg(arch)
        hf = tiny_hf_config(cfg.backbone, V).to_dict()
        hf['vision_feature_select_strategy'] = 'full'
        cfg.backbone.hf_config = hf
        if arch == 'llava_next':
            with pytest.raises(ValueError, match="not the 4x4 patch grid.*'full'"):
                make_backbone(cfg)
            continue
        torch.manual_seed(0)
        bb = make_backbone(cfg).eval()
        assert bb.image_tokens_per_image == H * H + 1
        pix = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            ref = torch.stack(list(bb.model.get_image_features(pixel_values=pix).pooler_output))
            assert ref.shape == (2, H * H + 1, D) and torch.allclose(bb.encode_pixels(pix), ref, atol=1e-5)


@pytest.mark.parametrize('arch', ARCHS)
def test_freeze_and_lora_by_config(arch):
    def trainable(**kw):
        torch.manual_seed(0)
        bb = make_backbone(make_cfg(arch, text_layers=2, **kw))
        return bb, {n for n, p in bb.named_parameters() if p.requires_grad}

    bb, names = trainable(freeze='vision')
    assert not any(p.requires_grad for p in bb.vision_tower.parameters())
    assert not any(p.requires_grad for p in bb.projector.parameters())
    assert all(p.requires_grad for p in bb.text_tower.parameters())
    if arch in ('llava_next', 'llava_onevision'):
        assert not bb.model.image_newline.requires_grad   # part of the image path
    assert {'act_embedding', 'image_scale'} <= names
    bb, names = trainable(freeze='all')
    assert names == {'act_embedding', 'image_scale'}
    bb, names = trainable(freeze_text_layers=1)
    layers = list(bb.text_layers())
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    assert all(p.requires_grad for p in bb.vision_tower.parameters())
    with pytest.raises(ValueError, match='freeze_text_layers'):
        trainable(freeze_text_layers=len(layers) + 1)
    bb, names = trainable(lora_r=2, lora_targets=['q_proj', 'v_proj'])
    lora = {n for n in names if 'lora_' in n}
    assert lora and names - lora == {'act_embedding', 'image_scale'}
    assert any('lora_' in n for n, _ in bb.text_tower.named_parameters())


def tiny_hf_tokenizer(directory):
    """A word-level HF tokenizer with V ids saved next to the weights (no hub)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = ['<pad>', '<unk>', 'pick', 'the', 'red', 'cube', 'place', 'blue', 'on', 'left']
    vocab = {w: i for i, w in enumerate(words)}
    vocab.update({f'w{i}': i for i in range(len(words), V)})
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token='<unk>'))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, pad_token='<pad>', unk_token='<unk>').save_pretrained(str(directory))


@pytest.mark.parametrize('arch', ARCHS)
def test_pretrained_dir_round_trip_and_wrong_arch(arch, tmp_path):
    yaml = pytest.importorskip('yaml', reason='the model config is read from YAML as the train CLI does')
    from vla_policy.models.tokenizer import HFTokenizer
    torch.manual_seed(0)
    ref = make_backbone(make_cfg(arch, n_obs=1)).eval()
    hf_dir = tmp_path / 'hf'
    ref.save_pretrained(str(hf_dir))
    tiny_hf_tokenizer(hf_dir)
    tok = HFTokenizer(str(hf_dir), max_len=8)
    assert tok.vocab_size == V == ref.vocab_size
    ids, mask = (torch.from_numpy(a) for a in tok.encode_batch(['pick the red cube', 'place blue cube on the left']))
    assert ids[0, :4].tolist() == [2, 3, 4, 5] and mask.sum(1).tolist() == [4, 6]
    text = (f"model:\n  backbone:\n    name: hf_vlm\n    hf_arch: {arch}\n    image_size: {S}\n"
            f"    pretrained: {hf_dir}\n  chunk: {{n_obs_steps: 1, chunk_size: 4, n_action_steps: 2}}\n"
            f"  action_dim: 3\n  state_dim: 3\n")
    cfg = VLAConfig.from_dict(yaml.safe_load(text)['model'])   # no tiny fields: the dir defines the model
    new = make_backbone(cfg).eval()
    assert type(new) is type(ref)
    assert cfg.backbone.hf_config['model_type'] == MODEL_TYPE[arch] == new.hf_model.config.model_type
    assert new.image_scale.item() == 1.0   # pretrained weights: image features are used as they are
    ref_sd, sd = ref.state_dict(), new.state_dict()
    assert set(ref_sd) == set(sd)
    assert all(torch.equal(ref_sd[k], sd[k]) for k in sd if k not in ('act_embedding', 'image_scale'))
    with torch.no_grad():
        new.act_embedding.copy_(ref.act_embedding)   # not part of the HF weights
        new.image_scale.copy_(ref.image_scale)
    images = torch.rand(2, 1, 3, S, S, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(new(images, ids, mask), ref(images, ids, mask))
        seq = torch.cat([ref.encode_images(images), ref.embed_tokens(ids)], 1)
        m = torch.cat([torch.ones(2, seq.shape[1] - ids.shape[1], dtype=torch.long), mask], 1)
        assert torch.equal(new.lm_logits(new.fused_forward(seq, m)), ref.lm_logits(ref.fused_forward(seq, m)))
    # a checkpoint's config (hf_config filled in) rebuilds offline: the directory is no longer read
    cfg3 = VLAConfig.from_dict(cfg.to_dict())
    cfg3.backbone.pretrained = str(tmp_path / 'gone')
    again = make_backbone(cfg3).eval()
    again.load_state_dict(new.state_dict())
    with torch.no_grad():
        assert torch.equal(again(images, ids, mask), ref(images, ids, mask))
    # the directory of another architecture is refused, naming both
    other = ARCHS[(ARCHS.index(arch) + 1) % len(ARCHS)]
    wrong = VLAConfig.from_dict(yaml.safe_load(text.replace(f'hf_arch: {arch}', f'hf_arch: {other}'))['model'])
    with pytest.raises(ValueError) as e:
        make_backbone(wrong)
    assert repr(MODEL_TYPE[arch]) in str(e.value) and repr(other) in str(e.value)


@pytest.mark.parametrize('arch', ARCHS)
def test_vla_checkpoint_round_trip(arch, tmp_path):
    """A from-scratch VLA checkpoint (tiny fields in config.json, weights in safetensors; tied / shared
    HF weights stored per name) loads back into the same arch with identical outputs."""
    import numpy as np
    from vla_policy.checkpoint import load_checkpoint, save_checkpoint
    from vla_policy.models.tokenizer import WordTokenizer
    from vla_policy.normalization import NormalizationStats
    tok = WordTokenizer.build(['pick the red cube', 'place the blue cube left'], max_len=6)
    d = make_cfg(arch).to_dict()
    d['backbone']['vocab_size'] = tok.vocab_size
    cfg = VLAConfig.from_dict(d)
    torch.manual_seed(0)
    model = VLA(cfg).eval()
    x = np.random.default_rng(0).normal(size=(50, 3))
    stats = {'state': NormalizationStats.from_data(x), 'action': NormalizationStats.from_data(x)}
    path = save_checkpoint(tmp_path / 'ckpt', model, cfg, stats, tok)
    loaded, cfg2, _, tok2, _ = load_checkpoint(path)
    assert type(loaded.backbone) is type(model.backbone)
    assert loaded.backbone.hf_model.config.model_type == MODEL_TYPE[arch]
    ids, mask = (torch.from_numpy(a) for a in tok2.encode_batch(['pick the red cube'] * 3))
    batch = dict(make_batch(), token_ids=ids, attention_mask=mask)
    with torch.no_grad():
        assert torch.equal(loaded(batch), model(batch))


def test_florence2_tiny_config_errors():
    with pytest.raises(ValueError, match='patch_size'):
        make_backbone(make_cfg('florence2', patch_size=12, image_size=48))
    with pytest.raises(ValueError, match='vision_hidden'):   # 3 stages: widths 34/4, 34/2, 34
        make_backbone(make_cfg('florence2', patch_size=16, image_size=32, vision_hidden=34))
