"""SDANModel: BasicSR's ``SRModel`` for misaligned optical-zoom pairs (SDAN, any registered SR arch, GAN optional).

Training feeds {X, Y'} (Y' = the target bicubic-downsampled to the input grid), testing {X, X_rgb}.
"""
import inspect
import math
from collections import OrderedDict
from os import path as osp

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.metrics import calculate_metric
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger, imwrite, tensor2img
from basicsr.utils.dist_util import get_dist_info
from basicsr.utils.registry import MODEL_REGISTRY
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from sdan_basicsr.archs.sdan_arch import pad_to_multiple
from sdan_basicsr.data.color import match_color
from sdan_basicsr.data.raw_utils import apply_white_balance
from sdan_basicsr.losses.masked_dual_l1_loss import MaskedDualL1Loss
from sdan_basicsr.utils.cpu_memory import retain_freed_memory
from sdan_basicsr.utils.precision import autocast, memory_format, parse_amp, resolve

#: What ``val.ref`` may name as SDAN's reference at test time.
VAL_REFS = ('input', 'target')
#: With ``val.match_color``, every metric is logged a second time under its name + this, after colour matching.
COLOR_MATCHED = '_color_matched'


def downsample_to(img: torch.Tensor, size) -> torch.Tensor:
    """Y' of the paper: ``img`` bicubic-downsampled (antialiased) to ``size`` (h, w)."""
    return F.interpolate(img, size=tuple(size), mode='bicubic', align_corners=False, antialias=True)


def noisy_reference(ref: torch.Tensor, noise: torch.Tensor, generator: torch.Generator = None) -> torch.Tensor:
    """``ref`` (gamma-2.2-encoded RGB without white balance, as the dataset's ``lq_rgb``) with the noise a sensor of
    noise profile ``noise`` leaves in its rendering: unit noise drawn at the sites of an RGGB mosaic and demosaicked
    bilinearly (each channel interpolated from its own sites, which correlates it as a camera's rendering does),
    scaled per pixel by √(S·x + O) of x = ref^2.2, added in linear light, clipped at 0 and encoded again. A plain
    camera's rendering (gamma 2.2, no colour matrix) up to its JPEG compression; a colour matrix amplifies it.

    Args:
        ref (Tensor): (N, 3, h, w) in [0, 1], h and w even.
        noise (Tensor): (N, 2, 2, 2) [S, O] over the RGGB cell (the dataset's ``noise``, colour augmentation included).
        generator (torch.Generator | None): For the draws. Default: None (the global one).
    """
    from sdan_basicsr.data.raw_utils import JPEG_GAMMA

    n, _, h, w = ref.shape
    sites = torch.zeros(1, 3, 2, 2, device=ref.device)  # RGGB: R (0, 0), G (0, 1) and (1, 0), B (1, 1)
    sites[0, 0, 0, 0] = sites[0, 1, 0, 1] = sites[0, 1, 1, 0] = sites[0, 2, 1, 1] = 1
    planes = torch.randn((n, 1, h, w), generator=generator, device=ref.device) * sites.repeat(1, 1, h // 2, w // 2)
    rb = torch.tensor([[1., 2., 1.], [2., 4., 2.], [1., 2., 1.]], device=ref.device) / 4
    g = torch.tensor([[0., 1., 0.], [1., 4., 1.], [0., 1., 0.]], device=ref.device) / 4
    kernels = torch.stack([rb, g, rb]).unsqueeze(1)  # bilinear demosaicking of each channel from its sites
    unit = F.conv2d(F.pad(planes, (1, 1, 1, 1), mode='reflect'), kernels, groups=3)
    shot, read = (noise[:, i].flatten(1)[:, [0, 1, 3]].view(-1, 3, 1, 1).float() for i in (0, 1))  # R, G, B
    x = ref.float().clamp(0, 1).pow(JPEG_GAMMA)
    x = (x + (shot * x + read).clamp(min=0).sqrt() * unit).clamp(0, 1)
    return x.pow(1 / JPEG_GAMMA).to(ref.dtype)


def blur_reference(ref: torch.Tensor, sigma: float) -> torch.Tensor:
    """``ref`` under a Gaussian blur of standard deviation ``sigma`` pixels (kernel ±3σ, reflected borders)."""
    if sigma == 0:
        return ref
    return TF.gaussian_blur(ref, [2 * math.ceil(3 * sigma) + 1] * 2, [sigma, sigma])


def parse_ref_blur(value, key: str = 'train.ref_blur') -> float:
    """``train.ref_blur`` as a float σ ≥ 0 (None/false: 0); anything else is an error naming ``key``."""
    if value is None or value is False:
        return 0.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f'{key}: {value!r} is not a Gaussian sigma >= 0 in input pixels (0 or false: off)')
    return float(value)


def image_name(lq_path: str) -> str:
    """``<scene>_<shot>`` for ``.../<scene>/<shot>.ARW``: SR-RAW reuses shot names in every scene."""
    folder, stem = osp.split(osp.splitext(lq_path)[0])
    return f'{osp.basename(folder)}_{stem}'


@MODEL_REGISTRY.register()
class SDANModel(SRModel):
    """``SRModel`` for SR-RAW-style pairs; differs only in what it feeds the network and how it scores.

    - Networks whose ``forward`` takes a reference (SDAN) get ``(lq, Y')`` in training and
      ``(lq, lq_rgb)`` in testing; any other registered arch gets ``lq`` alone.
    - ``pixel_opt`` of type ``MaskedDualL1Loss`` gets eq. (6)'s terms (X~, Y, X', Y', M'); a network
      that returns a plain tensor gets the HR term with a mask of ones. Other pixel losses get (X~, Y).
      ``perceptual_opt`` and, with ``network_d``, ``gan_opt`` / ``optim_d`` / ``net_d_iters`` /
      ``net_d_init_iters`` work as in BasicSR's ``SRGANModel``.
    - A non-finite loss stops training with the iteration named, before the weights are touched (fp32, bf16).
    - Mixed precision: ``train.amp`` / ``val.amp`` = ``false`` (default, the paper's fp32), ``bf16``, ``fp16`` or
      ``auto`` (bf16 on a CPU with native bf16 or a GPU that has it, fp16 on other GPUs, else fp32):
      ``torch.autocast`` over the forward passes and the losses of ``net_g`` (and ``net_d``), float32 master
      weights and optimizers; SDAN keeps its precision-critical stages in float32 (see :class:`SDAN`), any other
      arch gets plain autocast; ``train.channels_last: true`` then trains them in channels_last on a CPU (faster
      for the default SDAN, slower for the demo's 16-feature one: ``bench/RESULTS.md``). fp16 scales the loss with
      ``torch.amp.GradScaler``: a step whose gradients overflow is skipped and logged, not an error; the scaler's
      state is saved in the ``.state`` file and restored on resume.
    - ``train.ref_blur: σ`` (default 0, the paper's Y'): the network's training reference is Y' under a Gaussian
      blur of σ input pixels, so that it carries the target's geometry but not more detail than the input's own
      RGB, the reference at test time; eq. (6)'s X' term still compares with the sharp Y'. Without it a long
      training learns to take detail from Y' through the offsets, which the test-time reference does not have
      (``bench/RESULTS.md``, generalization; ``bench/ref_blur_fit.py`` measures the σ that makes Y' look like
      the input's RGB).
    - ``train.ref_noise: true`` (needs the dataset's ``noise_profile``): the training reference, after ``ref_blur``,
      gets the sensor noise of the input (:func:`noisy_reference`), as the test-time reference, the input's own
      RGB, has it. The reference steers only the offsets; trained on clean references, the offsets follow the
      test-time reference's noise, and the squared deformable convolution then draws it as texture at high ISO
      (``bench/RESULTS.md``, Pretrained SDAN). eq. (6)'s X' term still compares with the clean Y'.
    - On a CPU, freed memory is kept for reuse in the process
      (:func:`~sdan_basicsr.utils.cpu_memory.retain_freed_memory`, off with ``SDAN_RETAIN_MEMORY=0``): without it
      every large map is a fresh ``mmap`` whose pages the kernel zeroes.
    - ``val.ref``: SDAN's reference at test time, ``input`` (default: the input shot's RGB, as the paper's
      validation) or ``target`` (the target bicubic-downsampled to the input grid, as the released test code).
    - Testing pads inputs to a multiple of ``val.pad_multiple`` (default 32) and crops back; metrics
      compare the network's no-white-balance output with the target, saved images re-apply ``wb`` and
      are named ``<scene>_<shot>``. ``test.py`` also logs every image's metrics, one line per image.
    - Distributed runs (``--launcher pytorch`` or ``slurm``): every rank takes part in a validation (and in
      ``test.py``), testing its share of the set through the bare network, never through the
      ``DistributedDataParallel`` wrapper, whose forward is a collective; the per-image metrics are gathered, so
      the logged ones are those of one process testing the whole set (:meth:`dist_validation`).
    - ``val.match_color: true`` adds a metric row, never a replacement: each metric again, named
      ``<metric>_color_matched``, on the output brought to the colours of the input's own RGB rendition
      (``lq_rgb``, the camera JPEG) by one global colour transform (:func:`~sdan_basicsr.data.color.match_color`),
      as ``sdan-zoom --match-color`` does. The target is never used for the fit.
    """

    def __init__(self, opt):
        val_opt = opt.get('val') or {}
        self.amp_val = parse_amp(val_opt.get('amp'), 'val.amp')
        self.val_ref = val_opt.get('ref', 'input')
        if self.val_ref not in VAL_REFS:
            raise ValueError(f'val.ref: {self.val_ref!r} is not one of {VAL_REFS}')
        self.amp_train = parse_amp(opt['train'].get('amp'), 'train.amp') if opt['is_train'] else 'fp32'
        self.ref_blur = parse_ref_blur(opt['train'].get('ref_blur')) if opt['is_train'] else 0.
        self.ref_noise = bool(opt['train'].get('ref_noise', False)) if opt['is_train'] else False
        super().__init__(opt)
        if self.device.type == 'cpu' and retain_freed_memory():
            get_root_logger().info('CPU: freed memory is kept for reuse (sdan_basicsr.utils.cpu_memory)')
        self.amp_train, self.amp_val = resolve(self.amp_train, self.device), resolve(self.amp_val, self.device)
        get_root_logger().info(f'Precision: training {self.amp_train}, testing {self.amp_val}')
        forward = inspect.signature(self.get_bare_model(self.net_g).forward)
        required = [p for p in forward.parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.uses_ref = len(required) >= 2

    # ---------------------------------------------------------------- training set-up
    def model_to_device(self, net):
        """BasicSR's, after ``train.channels_last: true``'s memory format (channels_last for bf16/fp16 on a CPU, see
        :func:`~sdan_basicsr.utils.precision.memory_format`); before any DDP wrapping, so its buckets match."""
        if self.opt['is_train'] and self.opt['train'].get('channels_last', False):
            net = net.to(memory_format=memory_format(self.device, self.amp_train))
        return super().model_to_device(net)

    def init_training_settings(self):
        self.net_d = None
        if self.opt.get('network_d'):
            self.net_d = self.model_to_device(build_network(self.opt['network_d']))
            self.print_network(self.net_d)
            load_path = self.opt['path'].get('pretrain_network_d')
            if load_path is not None:
                self.load_network(self.net_d, load_path, self.opt['path'].get('strict_load_d', True),
                                  self.opt['path'].get('param_key_d', 'params'))
            self.net_d.train()
            train_opt = self.opt['train']
            self.cri_gan = build_loss(train_opt['gan_opt']).to(self.device)
            self.net_d_iters = train_opt.get('net_d_iters', 1)
            self.net_d_init_iters = train_opt.get('net_d_init_iters', 0)
        super().init_training_settings()

    def setup_optimizers(self):
        super().setup_optimizers()
        if self.net_d is not None:
            optim_opt = dict(self.opt['train']['optim_d'])
            self.optimizer_d = self.get_optimizer(optim_opt.pop('type'), self.net_d.parameters(), **optim_opt)
            self.optimizers.append(self.optimizer_d)
        # loss scaling for fp16 (one scaler for net_g and net_d, updated once per iteration); a no-op otherwise
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=resolve(self.amp_train, self.device) == 'fp16')

    def extra_training_state(self) -> dict:
        """What the ``.state`` file holds besides BasicSR's optimizers and schedulers: the fp16 loss scaler."""
        return {'scaler': self.scaler.state_dict()} if self.scaler.is_enabled() else {}

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        if self.scaler.is_enabled():
            if 'scaler' in resume_state:
                self.scaler.load_state_dict(resume_state['scaler'])
            else:
                get_root_logger().warning('the resumed state has no fp16 loss scaler (it was saved without '
                                          'train.amp: fp16); the scaler starts afresh')

    # ---------------------------------------------------------------- data and forward
    def feed_data(self, data):
        super().feed_data(data)
        self.lq_rgb = data['lq_rgb'].to(self.device) if 'lq_rgb' in data else None
        self.wb = data['wb'].to(self.device) if 'wb' in data else None
        self.noise = data['noise'].to(self.device) if 'noise' in data else None

    def _run(self, net, lq, ref):
        """Forward ``net``; returns (X~, X', M'), the last two None for plain SR archs. A network that reads its
        input's noise level (SDAN's ``noise_input``) gets the dataset's ``noise``."""
        if getattr(self.get_bare_model(net), 'noise_input', False):
            out = net(lq, ref, self.noise)
        else:
            out = net(lq, ref) if self.uses_ref else net(lq)
        if isinstance(out, tuple) and hasattr(out, 'sr'):
            return out.sr, out.aligned, out.mask
        return out, None, None

    def _forward_float(self, net, lq, ref, precision: str):
        """:meth:`_run` under ``precision``'s autocast, outputs in float32 (losses and metrics are float32)."""
        with autocast(self.device, precision):
            out = self._run(net, lq, ref)
        return tuple(None if t is None else t.float() for t in out)

    def optimize_parameters(self, current_iter):
        ref = downsample_to(self.gt, self.lq.shape[-2:]) if self.uses_ref else None
        net_ref = blur_reference(ref, self.ref_blur) if self.uses_ref else None
        if self.ref_noise and self.uses_ref:
            if self.noise is None:
                raise KeyError("train.ref_noise needs the training dataset's noise profiles: set its "
                               'noise_profile: true')
            net_ref = noisy_reference(net_ref, self.noise)
        step_g = self.net_d is None or (current_iter % self.net_d_iters == 0
                                        and current_iter > self.net_d_init_iters)
        loss_dict = OrderedDict()
        if self.net_d is not None:
            for p in self.net_d.parameters():
                p.requires_grad = False

        self.optimizer_g.zero_grad()
        self.output, aligned, mask = self._forward_float(self.net_g, self.lq, net_ref, self.amp_train)
        if step_g:
            with autocast(self.device, self.amp_train):
                l_total = self._generator_losses(loss_dict, aligned, ref, mask)
            self._check_finite(l_total, current_iter, loss_dict)
            self.scaler.scale(l_total).backward()
            self.scaler.step(self.optimizer_g)
        if self.net_d is not None:
            for p in self.net_d.parameters():
                p.requires_grad = True
            self.optimizer_d.zero_grad()
            with autocast(self.device, self.amp_train):
                l_d = self._discriminator_loss(loss_dict)
            self._check_finite(l_d, current_iter, loss_dict)
            self.scaler.scale(l_d).backward()
            self.scaler.step(self.optimizer_d)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.update()
        if scale is not None and self.scaler.get_scale() < scale:
            get_root_logger().warning(f'iteration {current_iter}: fp16 gradients overflowed, the step was skipped; '
                                      f'loss scale {scale:g} -> {self.scaler.get_scale():g}')

        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _generator_losses(self, loss_dict, aligned, ref, mask) -> torch.Tensor:
        """The terms of net_g's loss into ``loss_dict``; returns their sum."""
        if self.cri_pix:
            if isinstance(self.cri_pix, MaskedDualL1Loss):
                loss_dict['l_pix'] = self.cri_pix(self.output, self.gt, aligned, ref, mask)
            else:
                loss_dict['l_pix'] = self.cri_pix(self.output, self.gt)
        if self.cri_perceptual:
            l_percep, l_style = self.cri_perceptual(self.output, self.gt)
            if l_percep is not None:
                loss_dict['l_percep'] = l_percep
            if l_style is not None:
                loss_dict['l_style'] = l_style
        if self.net_d is not None:
            loss_dict['l_g_gan'] = self.cri_gan(self.net_d(self.output).float(), True, is_disc=False)
        return sum(loss_dict.values())

    def _discriminator_loss(self, loss_dict) -> torch.Tensor:
        """net_d's real and fake terms (and its mean outputs) into ``loss_dict``; returns their sum."""
        real_pred = self.net_d(self.gt).float()
        fake_pred = self.net_d(self.output.detach()).float()
        loss_dict['l_d_real'] = self.cri_gan(real_pred, True, is_disc=True)
        loss_dict['l_d_fake'] = self.cri_gan(fake_pred, False, is_disc=True)
        loss_dict['out_d_real'] = real_pred.detach().mean()
        loss_dict['out_d_fake'] = fake_pred.detach().mean()
        return loss_dict['l_d_real'] + loss_dict['l_d_fake']

    def save(self, epoch, current_iter):
        if getattr(self, 'net_d', None) is not None:
            self.save_network(self.net_d, 'net_d', current_iter)
        super().save(epoch, current_iter)

    def _check_finite(self, loss: torch.Tensor, current_iter: int, loss_dict) -> None:
        """Stop on a non-finite loss, except under fp16, where it is the loss scaler's business (step skipped)."""
        if not self.scaler.is_enabled() and not torch.isfinite(loss):
            terms = ', '.join(f'{k}={v.item():.4g}' for k, v in loss_dict.items())
            raise FloatingPointError(f'non-finite loss at iteration {current_iter} ({terms}); training stopped '
                                     'before this step changed any weight. The checkpoints saved so far are intact.')

    def test(self):
        """``self.output`` for ``self.lq``: ``net_g_ema`` when there is one, else ``net_g`` without its
        ``DistributedDataParallel`` wrapper, whose forward is a collective that a test must not issue."""
        net = self.test_network()
        multiple = self.opt.get('val', {}).get('pad_multiple', 32)
        h, w = self.lq.shape[-2:]
        ref = None
        if self.uses_ref:
            ref = pad_to_multiple(self.test_reference(), multiple)
        was_training = net.training
        net.eval()
        lq = pad_to_multiple(self.lq, multiple)
        with torch.no_grad():
            sr, _, _ = self._forward_float(net, lq, ref, self.amp_val)
        net.train(was_training)
        scale = sr.shape[-1] // lq.shape[-1]
        self.output = sr[..., :scale * h, :scale * w]

    def test_network(self) -> torch.nn.Module:
        """The bare network that tests and validations run: ``net_g_ema`` when there is one, else ``net_g``."""
        return self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)

    def test_reference(self) -> torch.Tensor:
        """SDAN's reference at test time, as ``val.ref`` says: the input's RGB, or the target downsampled."""
        if self.val_ref == 'target':
            if not hasattr(self, 'gt'):
                raise KeyError("val.ref: target needs the dataset's 'gt', which this dataset does not give")
            return downsample_to(self.gt, self.lq.shape[-2:])
        if self.lq_rgb is None:
            raise KeyError("the dataset gives no 'lq_rgb', the RGB reference SDAN needs at test time "
                           "(or set val.ref: target)")
        return self.lq_rgb

    def get_current_visuals(self):
        visuals = super().get_current_visuals()
        if self.wb is not None:
            visuals['result_wb'] = apply_white_balance(self.output.detach(), self.wb).cpu()
        if self.opt.get('val', {}).get('match_color'):
            if self.lq_rgb is None:
                raise KeyError("val.match_color needs the dataset's 'lq_rgb', the input's RGB rendition to match")
            out, ref = (t[0].detach().float().cpu().numpy().transpose(1, 2, 0)
                        for t in (visuals['result'], self.lq_rgb))
            visuals['result' + COLOR_MATCHED] = torch.from_numpy(match_color(out, ref).transpose(2, 0, 1))[None]
        return visuals

    # ---------------------------------------------------------------- validation
    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """``SRModel.nondist_validation`` with white balance re-applied to the saved images, the colour-matched
        metrics of ``val.match_color`` and, in ``test.py``, one log line of metrics per image."""
        dataset_name = dataloader.dataset.opt['name']
        scores = self._test_images(dataloader, dataset_name, current_iter, save_img, self.opt['val'].get('pbar'))
        self._report_metrics(dataset_name, scores, current_iter, tb_logger)

    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        """:meth:`nondist_validation` shared by every rank, which all call it (BasicSR's runs on rank 0 alone).

        Rank r tests images r, r + world_size, … of the set through the bare network (:meth:`test`), with rank 0's
        buffers; the scores of every image are gathered on every rank and reported in the set's order, so the
        metrics are those of one process testing the whole set. No forward is a collective, so a validation
        never meets another rank's training collectives, and the end of a run does not wait on a rank that left.
        """
        rank, world_size = get_dist_info()
        for buffer in self.test_network().buffers():  # BatchNorm statistics differ by each rank's last batch
            dist.broadcast(buffer, src=0)
        dataset, dataset_name = dataloader.dataset, dataloader.dataset.opt['name']
        shard = DataLoader(Subset(dataset, range(rank, len(dataset), world_size)), batch_size=1,
                           num_workers=dataloader.num_workers, collate_fn=dataloader.collate_fn)
        pbar = self.opt['val'].get('pbar') and rank == 0
        scores = self._test_images(shard, dataset_name, current_iter, save_img, pbar)
        gathered = [None] * world_size
        dist.all_gather_object(gathered, scores)
        scores = [gathered[i % world_size][i // world_size] for i in range(len(dataset))]
        self._report_metrics(dataset_name, scores, current_iter, tb_logger)

    def _metric_suffixes(self) -> tuple:
        """'' for the metrics on the output, and ``COLOR_MATCHED`` too with ``val.match_color``."""
        return ('', COLOR_MATCHED) if self.opt['val'].get('match_color') else ('', )

    def _test_images(self, dataloader, dataset_name, current_iter, save_img, pbar) -> list:
        """Test every image of ``dataloader`` (saving it with ``save_img``, with a progress bar with ``pbar``);
        returns one (name, {metric: value}) per image, in the loader's order."""
        metrics_opt = self.opt['val'].get('metrics') or {}
        suffixes = self._metric_suffixes()
        pbar = tqdm(total=len(dataloader), unit='image') if pbar else None
        scores = []
        for val_data in dataloader:
            img_name = image_name(val_data['lq_path'][0])
            self.feed_data(val_data)
            self.test()
            visuals = self.get_current_visuals()
            results = {suffix: tensor2img([visuals['result' + suffix]]) for suffix in suffixes}
            gt = None
            if 'gt' in visuals:
                gt = tensor2img([visuals['gt']])
                del self.gt
            if save_img:
                if self.opt['is_train']:
                    path = osp.join(self.opt['path']['visualization'], img_name, f'{img_name}_{current_iter}.png')
                else:
                    suffix = self.opt['val'].get('suffix') or self.opt['name']
                    path = osp.join(self.opt['path']['visualization'], dataset_name, f'{img_name}_{suffix}.png')
                imwrite(tensor2img([visuals.get('result_wb', visuals['result'])]), path)
            del self.lq, self.output
            scores.append((img_name, {name + suffix: calculate_metric({'img': img, 'img2': gt}, opt_)
                                      for suffix, img in results.items() for name, opt_ in metrics_opt.items()}))
            if pbar:
                pbar.update(1)
                pbar.set_description(f'Test {img_name}')
        if pbar:
            pbar.close()
        return scores

    def _report_metrics(self, dataset_name, scores, current_iter, tb_logger) -> None:
        """The metrics averaged over ``scores`` (as :meth:`_test_images` returns them, for the whole set) into
        ``self.metric_results``, the best ones and the log (in ``test.py``, every image's too)."""
        metrics_opt = self.opt['val'].get('metrics') or {}
        if not metrics_opt:
            return
        suffixes = self._metric_suffixes()
        self._initialize_best_metric_results(dataset_name)
        best = self.best_metric_results[dataset_name]
        for metric, suffix in ((m, x) for m in metrics_opt for x in suffixes[1:]):
            better = best[metric]['better']
            best.setdefault(metric + suffix, dict(better=better, iter=-1,
                                                  val=float('-inf') if better == 'higher' else float('inf')))
        self.metric_results = {metric + suffix: 0 for suffix in suffixes for metric in metrics_opt}
        logger = get_root_logger()
        for img_name, values in scores:
            for name, value in values.items():
                self.metric_results[name] += value
            if not self.opt['is_train']:
                logger.info(f'Image {img_name}: ' + ', '.join(f'{k} {v:.4f}' for k, v in values.items()))
        for metric in self.metric_results:
            self.metric_results[metric] /= len(scores)
            self._update_best_metric_result(dataset_name, metric, self.metric_results[metric], current_iter)
        self._log_validation_metric_values(current_iter, dataset_name, tb_logger)
