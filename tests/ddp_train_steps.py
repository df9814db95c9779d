"""A few training iterations of a BasicSR model on given batches, in one process or in each rank of a torchrun group.

Usage: ``[torchrun --nproc_per_node=N] ddp_train_steps.py OPT.yml BATCHES.pt OUT.pt``

``OPT.yml`` is a parsed option dict (``is_train``, ``path``, …; ``dist``, ``rank`` and ``world_size`` are set
here); ``BATCHES.pt`` a list of whole batches (dicts of tensors, the batch along dimension 0). Under torchrun, rank
r of N feeds items r·b … r·b + b − 1 of every batch (b = batch / N), through BasicSR's own ``init_dist`` and seeds
(``manual_seed`` + rank, as ``parse_options``); alone, the process feeds whole batches. Rank 0 saves to ``OUT.pt``
the losses logged at every iteration (``log``, averaged over the ranks by BasicSR's ``reduce_loss_dict``), the
bare networks' weights (``net_g``, and ``net_g_ema`` / ``net_d`` when the options make them) and, under torchrun,
whether ``DistributedDataParallel`` broadcasts each wrapped network's buffers at every forward
(``broadcast_buffers``).

basicsr is imported first and the plugin never by name: it comes through the import hook
(``sdan_basicsr_autoload``), as in ``torchrun -m basicsr.train``.
"""
import os
import sys

import torch
import yaml
from basicsr.models import build_model
from basicsr.utils import set_random_seed
from basicsr.utils.dist_util import get_dist_info, init_dist
from torch.nn.parallel import DistributedDataParallel


def main(opt_path: str, batches_path: str, out_path: str) -> None:
    with open(opt_path, encoding='utf-8') as f:
        opt = yaml.safe_load(f)
    opt['dist'] = 'RANK' in os.environ
    if opt['dist']:
        init_dist('pytorch')
    opt['rank'], opt['world_size'] = rank, world_size = get_dist_info()
    set_random_seed(opt['manual_seed'] + rank)
    model = build_model(opt)
    log = []
    for current_iter, batch in enumerate(torch.load(batches_path, weights_only=True), start=1):
        share = len(batch['lq']) // world_size
        model.update_learning_rate(current_iter)
        model.feed_data({key: value[rank * share:(rank + 1) * share] for key, value in batch.items()})
        model.optimize_parameters(current_iter)
        log.append(dict(model.get_current_log()))
    if rank == 0:
        nets = {name: getattr(model, name) for name in ('net_g', 'net_g_ema', 'net_d')
                if getattr(model, name, None) is not None}
        broadcast_buffers = {name: net.broadcast_buffers for name, net in nets.items()
                             if isinstance(net, DistributedDataParallel)}
        torch.save({'log': log, 'broadcast_buffers': broadcast_buffers,
                    **{name: model.get_bare_model(net).state_dict() for name, net in nets.items()}}, out_path)


if __name__ == '__main__':
    main(*sys.argv[1:])
