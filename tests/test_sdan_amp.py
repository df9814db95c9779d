"""Mixed precision of SDANModel and SDAN: amp off is the plain float32 step, bf16/fp16 stay close to it, SDAN's
float32 stages hold under autocast, the fp16 scaler skips overflowing steps and is restored on resume, bad values
are named."""
import copy
import subprocess
import sys
from os import path as osp

import pytest
import torch
import torch.nn.functional as F
from basicsr.models import build_model
from test_sdan_pipeline import TRAIN, _env, _options, _run, _train_log, _write, demo_root  # noqa: F401,F811

from sdan_basicsr.archs.sdan_arch import SDAN, CrossPackingAttention
from sdan_basicsr.losses.masked_dual_l1_loss import MaskedDualL1Loss
from sdan_basicsr.models.sdan_model import downsample_to
from sdan_basicsr.utils.options_check import OptionError, check_option_file
from sdan_basicsr.utils.precision import auto_precision, autocast, parse_amp

TINY = {'type': 'SDAN', 'num_feat': 8, 'num_block': 1, 'upscale': 4, 'image_skip': True}
#: Relative error of a tiny SDAN's outputs under autocast vs float32 (8 / 11 significant bits of the conv inputs).
TOLERANCE = {'bf16': 3e-2, 'fp16': 5e-3}
GRAD_COSINE = {'bf16': 0.99, 'fp16': 0.999}


def _opt(tmp_path, amp=False, **train):
    opt = {
        'name': 'amp', 'model_type': 'SDANModel', 'scale': 4, 'num_gpu': 0, 'is_train': True, 'dist': False,
        'network_g': dict(TINY),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                 'models': str(tmp_path / 'models'), 'training_states': str(tmp_path / 'training_states')},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5}, 'total_iter': 10,
                  'pixel_opt': {'type': 'MaskedDualL1Loss', 'loss_weight': 1.0, 'crop_border_hr': 4,
                                'crop_border_lr': 1}, 'amp': amp, **train},
        'val': {'metrics': {}},
    }
    (tmp_path / 'models').mkdir(exist_ok=True)
    (tmp_path / 'training_states').mkdir(exist_ok=True)
    return opt


def _batch(seed=0, side=24):
    gen = torch.Generator().manual_seed(seed)
    return {'lq': torch.rand(2, 1, side, side, generator=gen),
            'gt': torch.rand(2, 3, 4 * side, 4 * side, generator=gen),
            'lq_rgb': torch.rand(2, 3, side, side, generator=gen)}


def _model(tmp_path, amp=False, **train):
    torch.manual_seed(0)
    return build_model(_opt(tmp_path, amp, **train))


def _params(net):
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def test_amp_off_is_the_plain_float32_step(tmp_path):
    """``amp: false``: the step is exactly forward, eq. (6), backward, Adam — no scaler or autocast in the way."""
    model = _model(tmp_path)
    net = copy.deepcopy(model.net_g)
    optim = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.99))
    loss_fn = MaskedDualL1Loss(crop_border_hr=4, crop_border_lr=1)
    for it in range(1, 3):
        batch = _batch(it)
        model.feed_data(batch)
        model.optimize_parameters(it)
        optim.zero_grad()
        ref = downsample_to(batch['gt'], batch['lq'].shape[-2:])
        out = net(batch['lq'], ref)
        loss = loss_fn(out.sr, batch['gt'], out.aligned, ref, out.mask)
        loss.backward()
        optim.step()
        assert model.log_dict['l_pix'] == loss.item()
    assert torch.equal(_params(model.net_g), _params(net))
    assert not model.scaler.is_enabled() and model.extra_training_state() == {}


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_low_precision_training_step_stays_close_to_float32(tmp_path, amp):
    ref_model, model = _model(tmp_path, channels_last=True), _model(tmp_path, amp, channels_last=True)
    assert torch.equal(_params(ref_model.net_g), _params(model.net_g))
    for m in (ref_model, model):
        m.feed_data(_batch())
        m.optimize_parameters(1)
    loss, ref_loss = model.log_dict['l_pix'], ref_model.log_dict['l_pix']
    assert abs(loss - ref_loss) <= TOLERANCE[amp] * ref_loss
    assert model.output.dtype == torch.float32  # the losses run on float32 outputs
    # train.channels_last: the low-precision network trains in channels_last on a CPU, float32 stays contiguous
    weight, ref_weight = model.net_g.body[0].conv1.weight, ref_model.net_g.body[0].conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert ref_weight.is_contiguous()
    for p in model.net_g.parameters():
        assert p.dtype == torch.float32  # float32 master weights
    grad, ref_grad = (torch.cat([p.grad.flatten() for p in m.net_g.parameters()]) for m in (model, ref_model))
    assert F.cosine_similarity(grad, ref_grad, dim=0) > GRAD_COSINE[amp]  # unscaled: the same descent direction


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_low_precision_inference_close_to_float32_and_policy_holds(amp):
    torch.manual_seed(0)
    net = SDAN(num_feat=8, num_block=2, image_skip=True).eval()
    for cpa in (net.align.offset_att1, net.align.offset_att2):
        cpa.gamma.data.fill_(0.5)
    x, ref = torch.rand(1, 1, 40, 48), torch.rand(1, 3, 40, 48)
    with torch.no_grad():
        exact = net(x, ref)
        with autocast('cpu', amp):
            low = net(x, ref)
    for name, a, b in zip(exact._fields, exact, low):
        assert b.dtype == torch.float32, f'{name} leaves SDAN in {b.dtype}'
        err = ((a - b).norm() / a.norm().clamp_min(1e-12)).item()
        assert err <= TOLERANCE[amp], f'{name}: relative error {err:.1e} under {amp}'


def test_cpa_forms_its_energy_in_float32_under_autocast():
    """E = X Xᵀ of |E| ~ 10⁴ rounded to bf16 would be off by whole units and scramble the softmax; the policy
    computes E and the softmax in float32, so only A's rounding and A X in bf16 remain."""
    torch.manual_seed(0)
    cpa = CrossPackingAttention()
    cpa.gamma.data.fill_(1.)
    x = (torch.randn(1, 4, 64, 64) * 6).bfloat16()  # bf16-exact input: E in float32 is then exactly the reference's
    exact = cpa(x.float()) - x.float()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = cpa(x)
    assert low.dtype == torch.float32
    err = ((low - x.float() - exact).norm() / exact.norm()).item()
    packed = F.pixel_unshuffle(x, 8).flatten(2)
    naive = torch.softmax(-(packed @ packed.transpose(1, 2)), -1) @ packed  # the whole block in bf16
    naive = F.pixel_shuffle(naive.view(1, -1, 8, 8).float(), 8)
    naive_err = ((naive - exact).norm() / exact.norm()).item()
    assert err < 1e-2 < naive_err, (err, naive_err)


def test_fp16_overflow_skips_the_step_and_logs_it(tmp_path, caplog):
    model = _model(tmp_path, 'fp16')
    model.cri_pix.loss_weight = float('inf')
    before, scale = _params(model.net_g), model.scaler.get_scale()
    model.feed_data(_batch())
    model.optimize_parameters(1)  # no FloatingPointError: the scaler's business
    assert torch.equal(_params(model.net_g), before)
    assert model.scaler.get_scale() < scale
    assert 'fp16 gradients overflowed, the step was skipped' in caplog.text


def test_float32_and_bf16_stop_on_a_non_finite_loss(tmp_path):
    for amp in (False, 'bf16'):
        model = _model(tmp_path, amp)
        model.cri_pix.loss_weight = float('nan')
        model.feed_data(_batch())
        with pytest.raises(FloatingPointError, match='non-finite loss at iteration 3'):
            model.optimize_parameters(3)


def test_fp16_scaler_is_saved_and_restored(tmp_path):
    model = _model(tmp_path, 'fp16')
    for it in range(1, 4):
        model.feed_data(_batch(it))
        model.optimize_parameters(it)
    model.scaler.update(new_scale=1024.)
    state = {'epoch': 0, 'iter': 3, 'optimizers': [o.state_dict() for o in model.optimizers],
             'schedulers': [s.state_dict() for s in model.schedulers], **model.extra_training_state()}
    assert state['scaler']['scale'] == 1024.
    path = tmp_path / '3.state'
    torch.save(state, path)
    resumed = _model(tmp_path, 'fp16')
    resumed.resume_training(torch.load(path, weights_only=True))
    assert resumed.scaler.state_dict() == model.scaler.state_dict()


def test_gan_with_ema_trains_under_bf16(tmp_path):
    opt = _opt(tmp_path, 'bf16', ema_decay=0.9, optim_d={'type': 'Adam', 'lr': 1e-4},
               gan_opt={'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.01})
    opt['network_d'] = {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 4}
    torch.manual_seed(0)
    model = build_model(opt)
    before = _params(model.net_d)
    model.feed_data(_batch())
    model.optimize_parameters(1)
    assert {'l_pix', 'l_g_gan', 'l_d_real', 'l_d_fake'} <= set(model.log_dict)
    assert all(torch.isfinite(torch.tensor(v)) for v in model.log_dict.values())
    assert not torch.equal(_params(model.net_d), before)
    assert not torch.equal(_params(model.net_g_ema), _params(model.net_g))


def test_validation_amp_and_reference_of_the_target(tmp_path):
    opt = _opt(tmp_path)
    opt['val'] = {'amp': 'bf16', 'ref': 'target'}
    torch.manual_seed(0)
    model = build_model(opt)
    seen = {}
    forward = model.net_g.forward

    def spy(lq, ref):
        seen['ref'], seen['autocast'] = ref, torch.is_autocast_enabled('cpu')
        return forward(lq, ref)

    model.net_g.forward = spy
    batch = _batch(side=32)
    model.feed_data(batch)
    model.test()
    assert torch.equal(seen['ref'], downsample_to(batch['gt'], (32, 32))) and seen['autocast']
    assert model.output.dtype == torch.float32


@pytest.mark.parametrize('key, value', [('train', 'fp8'), ('train', True), ('val', 'bf61')])
def test_bad_amp_value_names_the_key_and_the_allowed_values(tmp_path, key, value):
    opt = _opt(tmp_path)
    opt[key]['amp'] = value
    with pytest.raises(ValueError, match=rf"{key}\.amp: .* allowed values: false, 'bf16', 'fp16', 'auto'"):
        build_model(opt)


def test_option_file_check_rejects_bad_amp_and_ref(tmp_path):
    import yaml

    opt = _opt(tmp_path, 'fp8')
    opt['datasets'] = {'train': {'type': 'SRRAWPairedDataset'}}
    opt['val']['ref'] = 'gt'
    path = tmp_path / 'bad.yml'
    path.write_text(yaml.safe_dump(opt))
    with pytest.raises(OptionError) as err:
        check_option_file(str(path), is_train=True)
    assert "train.amp: 'fp8'" in str(err.value) and "val.ref: 'gt'" in str(err.value)


def test_parse_amp_and_auto():
    assert [parse_amp(v, 'k') for v in (False, None, 'fp32', 'bf16', 'fp16')] == ['fp32'] * 3 + ['bf16', 'fp16']
    assert parse_amp('auto', 'k') == 'auto' and auto_precision('cpu') in ('bf16', 'fp32')


@pytest.mark.slow
def test_fp16_under_torchrun_saves_the_scaler_and_resumes(tmp_path, demo_root):  # noqa: F811
    """DDP (2 gloo processes) with ``amp: fp16``: the ``.state`` holds the scaler; ``--auto_resume`` goes on from it."""
    opt = _options(demo_root, 'sdan_fp16', train__total_iter=4, train__amp='fp16')
    opt['logger'].update(save_checkpoint_freq=2)
    opt['val'].update(val_freq=4)
    torchrun = [osp.join(osp.dirname(sys.executable), 'torchrun'), '--nproc_per_node=2', '--master_port=29741']
    proc = subprocess.run(torchrun + [TRAIN, '-opt', _write(tmp_path, opt), '--launcher', 'pytorch'],
                          env=_env(tmp_path), cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    states = tmp_path / 'experiments' / 'sdan_fp16' / 'training_states'
    state = torch.load(states / '4.state', weights_only=True)
    assert state['iter'] == 4 and state['scaler']['scale'] > 0

    opt['train']['total_iter'] = 6
    _run([TRAIN, '-opt', _write(tmp_path, opt), '--auto_resume'], tmp_path)
    log = _train_log(tmp_path, 'sdan_fp16')
    assert 'Resuming training from epoch: ' in log and 'no fp16 loss scaler' not in log
    assert torch.load(states / '6.state', weights_only=True)['scaler']['scale'] > 0
