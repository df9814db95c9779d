"""The video clip maker: deterministic, the layouts BasicSR's video datasets read, real footage split by source,
objects that move on their own."""
import json
import os
from os import path as osp

import cv2
import numpy as np
import pytest
from basicsr.data.video_test_dataset import VideoTestDataset, VideoTestVimeo90KDataset
from basicsr.data.vimeo90k_dataset import Vimeo90KDataset

from sdan_basicsr.tools import make_video_demo as mvd

SCALES = (4, 16)
TINY = dict(scale=SCALES, gt_size=64, num_train_clips=2, num_test_clips=1, num_test_frames=7)


@pytest.fixture(scope='module')
def tiny_set(tmp_path_factory):
    return mvd.make_video_demo(str(tmp_path_factory.mktemp('video') / 'set'), **TINY)


def _files(root: str) -> dict:
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            with open(osp.join(folder, name), 'rb') as f:
                found[osp.relpath(osp.join(folder, name), root)] = f.read()
    return found


def test_deterministic_by_seed(tiny_set, tmp_path):
    first = _files(osp.dirname(tiny_set['meta']))
    assert _files(osp.dirname(mvd.make_video_demo(str(tmp_path / 'again'), **TINY)['meta'])) == first
    other = _files(osp.dirname(mvd.make_video_demo(str(tmp_path / 'seed1'), **TINY, seed=1)['meta']))
    assert other.keys() == first.keys() and other != first


def test_an_existing_set_is_kept_and_another_refused(tiny_set):
    out = osp.dirname(tiny_set['meta'])
    before = os.stat(tiny_set['meta']).st_mtime_ns
    assert mvd.make_video_demo(out, **TINY) == tiny_set
    assert os.stat(tiny_set['meta']).st_mtime_ns == before
    with pytest.raises(FileExistsError, match='remove it'):
        mvd.make_video_demo(out, **dict(TINY, num_objects=0))


@pytest.mark.parametrize('scale', SCALES)
def test_vimeo90k_dataset_reads_the_training_layout(tiny_set, scale):
    opt = dict(dataroot_gt=tiny_set['train_gt'], dataroot_lq=tiny_set[f'train_lq_x{scale}'],
               meta_info_file=tiny_set['meta_info_file'], io_backend={'type': 'disk'}, num_frame=7, gt_size=32,
               random_reverse=False, use_hflip=True, use_rot=True, scale=scale)
    dataset = Vimeo90KDataset(opt)
    assert len(dataset) == TINY['num_train_clips']
    item = dataset[0]
    assert item['key'] == 'generated/0001'
    assert item['lq'].shape == (7, 3, 32 // scale, 32 // scale) and item['gt'].shape == (3, 32, 32)
    test = VideoTestVimeo90KDataset(dict(opt, name='vimeo', cache_data=False, io_backend={'type': 'disk'}))
    assert test[0]['lq'].shape == (7, 3, 64 // scale, 64 // scale) and test[0]['gt'].shape == (3, 64, 64)


@pytest.mark.parametrize('scale', SCALES)
def test_video_test_dataset_reads_the_test_layout(tiny_set, scale):
    dataset = VideoTestDataset(dict(name='Vid4', dataroot_gt=tiny_set['test_gt'],
                                    dataroot_lq=tiny_set[f'test_lq_x{scale}'], io_backend={'type': 'disk'},
                                    cache_data=True, num_frame=7, padding='reflection_circle'))
    assert len(dataset) == TINY['num_test_frames']
    item = dataset[3]
    assert item['folder'] == f'{mvd.TEST_PHOTOS[0]}_00' and item['idx'] == '3/7'
    assert item['lq'].shape == (7, 3, 64 // scale, 64 // scale) and item['gt'].shape == (3, 64, 64)


def test_lr_is_matlab_bicubic_of_the_gt(tiny_set):
    from basicsr.utils.matlab_functions import imresize

    gt = cv2.imread(osp.join(tiny_set['test_gt'], f'{mvd.TEST_PHOTOS[0]}_00', '00000002.png')).astype(np.float32) / 255
    lq = cv2.imread(osp.join(tiny_set['test_lq_x4'], f'{mvd.TEST_PHOTOS[0]}_00', '00000002.png')).astype(np.float32)
    assert np.abs(np.clip(imresize(gt, 1 / 4), 0, 1) * 255 - lq).max() <= 0.5 + 1e-3


def _block_errors(meta_file: str, frames: list) -> np.ndarray:
    """Per 8×8 block, the mean absolute error of frame 1 predicted from frame 0 by the background's known pan."""
    with open(meta_file) as f:
        dy, dx = json.load(f)['train']['generated/0001']['pan']['velocity']
    predicted = cv2.warpAffine(frames[0], np.float32([[1, 0, -dx], [0, 1, -dy]]), frames[0].shape[1::-1],
                               flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    error = np.abs(predicted - frames[1]).mean(axis=2)[8:-8, 8:-8]
    return error.reshape(error.shape[0] // 8, 8, error.shape[1] // 8, 8).mean(axis=(1, 3))


@pytest.mark.parametrize('num_objects', [0, 3])
def test_objects_move_on_their_own(tmp_path, num_objects):
    """Consecutive frames differ by the background's pan alone, except where the objects are."""
    paths = mvd.make_video_demo(str(tmp_path / 'set'), scale=4, gt_size=128, num_train_clips=1, num_test_clips=0,
                                num_objects=num_objects)
    frames = [cv2.imread(osp.join(paths['train_gt'], 'generated', '0001', f'im{i}.png')).astype(np.float32) / 255
              for i in (1, 2)]
    blocks = _block_errors(paths['meta'], frames)
    assert np.median(blocks) < 0.02
    if num_objects:
        assert blocks.max() > 0.1 and (blocks > 0.05).mean() < 0.5
    else:
        assert blocks.max() < 0.05


def test_a_fixed_pan_moves_every_clip_alike(tmp_path, tiny_set):
    """``pan``: every generated clip, training and held-out, pans by that velocity, recorded in the set's metadata;
    the frames follow it (the second frame is the first shifted by it)."""
    pan = (1.3, -2.1)
    paths = mvd.make_video_demo(str(tmp_path / 'set'), scale=4, gt_size=128, num_train_clips=2, num_test_clips=1,
                                num_test_frames=7, num_objects=0, pan=pan)
    with open(paths['meta'], encoding='utf-8') as f:
        meta = json.load(f)
    assert meta['args']['pan'] == list(pan)
    assert [clip['pan']['velocity'] for clip in (*meta['train'].values(), *meta['test'].values())] == [list(pan)] * 3
    frames = [cv2.imread(osp.join(paths['train_gt'], 'generated', '0001', f'im{i}.png')).astype(np.float32) / 255
              for i in (1, 2)]
    assert _block_errors(paths['meta'], frames).max() < 0.05
    with open(tiny_set['meta'], encoding='utf-8') as f:  # random pans: the sets made before the option read the same
        assert 'pan' not in json.load(f)['args']


def _write_video(path: str, frames: list) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'MJPG'), 10, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()


def test_videos_are_cut_into_shots_and_kept_to_their_split(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    scenes = [(cv2.GaussianBlur(rng.random((40, 72, 3)), (0, 0), 3) * 100 + offset).astype(np.uint8)
              for offset in (20, 130)]  # smooth textures: a pan by a pixel changes little, a cut much
    pan = [np.roll(scenes[0], i, axis=1) for i in range(9)] + [np.roll(scenes[1], i, axis=0) for i in range(16)]
    _write_video(str(tmp_path / 'a.avi'), pan)  # a cut after 9 frames: one septuplet, then two
    _write_video(str(tmp_path / 'b.avi'), [np.roll(scenes[1], i, axis=1) for i in range(10)])
    monkeypatch.setattr(mvd, 'VIDEOS', {'a.avi': ('train', 0.5), 'b.avi': ('test', 1.0)})

    shots = mvd.read_shots(str(tmp_path / 'a.avi'), 0.5, 4)
    assert [len(shot) for shot in shots] == [9, 16]
    assert shots[0][0].shape == (20, 36, 3)

    paths = mvd.make_video_demo(str(tmp_path / 'set'), scale=4, gt_size=32, num_train_clips=1, num_test_clips=0,
                                num_test_frames=8, videos=str(tmp_path))
    with open(paths['meta_info_file']) as f:
        assert f.read().splitlines() == ['generated/0001 7 (32,32,3)', 'a/0001 7 (20,36,3)', 'a/0002 7 (20,36,3)',
                                         'a/0003 7 (20,36,3)']
    with open(paths['meta']) as f:
        meta = json.load(f)
    assert [clip['frames'] for key, clip in meta['train'].items() if key.startswith('a/')] == [[0, 7], [9, 16],
                                                                                                [16, 23]]
    assert sorted(os.listdir(paths['test_gt'])) == ['b_00']  # 10 frames: one clip of 8, the rest left out
    assert len(os.listdir(osp.join(paths['test_lq_x4'], 'b_00'))) == 8
