// Fused bilinear warp of the squared deformable convolution's ``fast`` backend (CPU).
//
// out(p) = m(p) · S(p + Θ(p) + k//2) + b: S is the convolution computed with padding k − 1; sampling
// is bilinear with zero padding (corners outside the map get weight 0) and the derivatives along
// y / x are taken at the floor corners, as grid_sample and the deformable-conv kernels do. SDAN
// eq. (5) with one offset Θ(p) for every tap of the window.
//
// The samples are taken from a channels-last copy of S, so every memory access moves a run of C
// contiguous values and the inner loops vectorise; tensors in (N, C, H, W) memory are transposed
// tile by tile inside the kernels rather than by separate passes. The backward scatter-add into the
// source gradient is race-free and deterministic: each task owns one image and one block of
// channels and visits the pixels in a fixed order, so no result depends on the number of threads.
#include <torch/extension.h>

#include <ATen/AccumulateType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

#if defined(_MSC_VER)
#define SQUARED_WARP_NOINLINE __declspec(noinline)
#else
#define SQUARED_WARP_NOINLINE __attribute__((noinline))
#endif

namespace {

// Four corners of a bilinear sample: source pixel indices (y · Ws + x, -1 outside), weights and the
// weights' derivatives along y and x, in the order (0, 0), (0, 1), (1, 0), (1, 1) of (dy, dx).
template <typename scalar_t>
struct Corners {
  int64_t index[4];
  scalar_t w[4];
  scalar_t wdy[4];
  scalar_t wdx[4];
};

// Fills ``c`` for the sample at (row, col) of an hs × ws map; false when no corner lies inside.
template <typename scalar_t>
inline bool corners(scalar_t row, scalar_t col, int64_t hs, int64_t ws, Corners<scalar_t>& c) {
  const scalar_t y0f = std::floor(row);
  const scalar_t x0f = std::floor(col);
  // also false for NaN; the casts below are safe once the floor corner lies in [-1, size - 1]
  if (!(y0f >= scalar_t(-1) && y0f <= scalar_t(hs - 1) && x0f >= scalar_t(-1) && x0f <= scalar_t(ws - 1))) {
    for (int k = 0; k < 4; ++k) {
      c.index[k] = -1;
      c.w[k] = c.wdy[k] = c.wdx[k] = scalar_t(0);
    }
    return false;
  }
  const scalar_t fy = row - y0f;
  const scalar_t fx = col - x0f;
  const int64_t y0 = static_cast<int64_t>(y0f);
  const int64_t x0 = static_cast<int64_t>(x0f);
  const bool vy[2] = {y0 >= 0, y0 + 1 < hs};
  const bool vx[2] = {x0 >= 0, x0 + 1 < ws};
  const scalar_t wy[2] = {scalar_t(1) - fy, fy};
  const scalar_t wx[2] = {scalar_t(1) - fx, fx};
  for (int k = 0; k < 4; ++k) {
    const int dy = k >> 1;
    const int dx = k & 1;
    if (vy[dy] && vx[dx]) {
      c.index[k] = (y0 + dy) * ws + (x0 + dx);
      c.w[k] = wy[dy] * wx[dx];
      c.wdy[k] = dy ? wx[dx] : -wx[dx];
      c.wdx[k] = dx ? wy[dy] : -wy[dy];
    } else {
      c.index[k] = -1;
      c.w[k] = c.wdy[k] = c.wdx[k] = scalar_t(0);
    }
  }
  return true;
}

// Per-thread scratch memory, kept between calls up to kScratchKeep bytes: a fresh large allocation
// costs a page fault per 4 KiB on first touch, about as much as the work done in it.
constexpr size_t kScratchKeep = size_t(8) << 20;

template <typename scalar_t>
class Scratch {
 public:
  explicit Scratch(size_t count) {
    thread_local std::vector<unsigned char> kept;
    const size_t bytes = count * sizeof(scalar_t);
    if (bytes > kScratchKeep) {
      own_.resize(bytes);
      data_ = reinterpret_cast<scalar_t*>(own_.data());
      return;
    }
    if (kept.size() < bytes) {
      kept.resize(bytes);
    }
    data_ = reinterpret_cast<scalar_t*>(kept.data());
  }
  scalar_t* data() const { return data_; }

 private:
  std::vector<unsigned char> own_;
  scalar_t* data_;
};

struct Geometry {
  int64_t n, h, w, hs, ws, c;
};

// Corners of the sample of output pixel (y, x) of image n, at Θ plus the pixel's own coordinate plus
// ``offset`` (k//2: pixel p of the image is pixel p + k//2 of the padded convolution); see ``corners``.
template <typename scalar_t>
inline bool pixel_corners(const scalar_t* theta, const Geometry& g, int64_t n, int64_t y, int64_t x, scalar_t offset,
                          Corners<scalar_t>& c) {
  const int64_t hw = g.h * g.w;
  const scalar_t* t = theta + n * 2 * hw + y * g.w + x;
  return corners(t[0] + (static_cast<scalar_t>(y) + offset), t[hw] + (static_cast<scalar_t>(x) + offset), g.hs,
                 g.ws, c);
}

inline int64_t grain_rows(int64_t w, int64_t c) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, w * c));
}

// out[j · out_stride + i] = in[i · in_stride + j] for i < rows, j < cols, in cache-sized tiles.
template <typename scalar_t>
inline void transpose_scalar(const scalar_t* __restrict in, int64_t in_stride, scalar_t* __restrict out,
                             int64_t out_stride, int64_t rows, int64_t cols) {
  constexpr int64_t tile = 16;
  for (int64_t i0 = 0; i0 < rows; i0 += tile) {
    const int64_t i1 = std::min(rows, i0 + tile);
    for (int64_t j0 = 0; j0 < cols; j0 += tile) {
      const int64_t j1 = std::min(cols, j0 + tile);
      for (int64_t j = j0; j < j1; ++j) {
        for (int64_t i = i0; i < i1; ++i) {
          out[j * out_stride + i] = in[i * in_stride + j];
        }
      }
    }
  }
}

// The same; for float on x86-64 four input rows at a time across the whole width, in register blocks
// (about twice as fast as the scalar loop, which waits on its strided loads).
template <typename scalar_t>
inline void transpose_rows(const scalar_t* in, int64_t in_stride, scalar_t* out, int64_t out_stride, int64_t rows,
                           int64_t cols) {
  transpose_scalar(in, in_stride, out, out_stride, rows, cols);
}

#if defined(__SSE2__)
template <>
inline void transpose_rows<float>(const float* in, int64_t in_stride, float* out, int64_t out_stride, int64_t rows,
                             int64_t cols) {
  int64_t i = 0;
  for (; i + 4 <= rows; i += 4) {
    const float* r = in + i * in_stride;
    int64_t j = 0;
    for (; j + 4 <= cols; j += 4) {
      __m128 a = _mm_loadu_ps(r + j);
      __m128 b = _mm_loadu_ps(r + in_stride + j);
      __m128 c = _mm_loadu_ps(r + 2 * in_stride + j);
      __m128 d = _mm_loadu_ps(r + 3 * in_stride + j);
      _MM_TRANSPOSE4_PS(a, b, c, d);
      float* o = out + j * out_stride + i;
      _mm_storeu_ps(o, a);
      _mm_storeu_ps(o + out_stride, b);
      _mm_storeu_ps(o + 2 * out_stride, c);
      _mm_storeu_ps(o + 3 * out_stride, d);
    }
    transpose_scalar(r + j, in_stride, out + j * out_stride + i, out_stride, 4, cols - j);
  }
  transpose_scalar(in + i * in_stride, in_stride, out + i, out_stride, rows - i, cols);
}
#endif

// out[j · out_stride + i] = in[i · in_stride + j]. Output rows far apart (channel-last rows into
// planes) are written 16 at a time, so that the stores stream through few pages.
template <typename scalar_t>
inline void transpose(const scalar_t* in, int64_t in_stride, scalar_t* out, int64_t out_stride, int64_t rows,
                      int64_t cols) {
  if (out_stride <= in_stride) {
    transpose_rows(in, in_stride, out, out_stride, rows, cols);
    return;
  }
  constexpr int64_t block = 16;
  for (int64_t j0 = 0; j0 < cols; j0 += block) {
    transpose_rows(in + j0, in_stride, out + j0 * out_stride, out_stride, rows, std::min(block, cols - j0));
  }
}

// (N, C, H, W) memory → (N, H, W, C) memory, parallel over image rows.
template <typename scalar_t>
void to_channels_last(const scalar_t* in, scalar_t* out, int64_t n, int64_t c, int64_t h, int64_t w) {
  at::parallel_for(0, n * h, grain_rows(w, c), [&](int64_t begin, int64_t end) {
    for (int64_t ny = begin; ny < end; ++ny) {
      const int64_t i = ny / h;
      const int64_t y = ny % h;
      transpose(in + i * c * h * w + y * w, h * w, out + ny * w * c, c, c, w);
    }
  });
}

template <typename scalar_t>
void forward_kernel(const scalar_t* __restrict src, const scalar_t* __restrict theta, const scalar_t* mask,
                    const scalar_t* bias, scalar_t* __restrict out, bool out_channels_last, const Geometry& g,
                    scalar_t offset) {
  const int64_t C = g.c;
  const int64_t hw = g.h * g.w;
  const std::vector<scalar_t> zeros(C, scalar_t(0));
  const scalar_t* zero = zeros.data();
  const scalar_t* __restrict b = bias ? bias : zero;
  at::parallel_for(0, g.n * g.h, grain_rows(g.w, C), [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> buffer(out_channels_last ? 0 : g.w * C);
    for (int64_t ny = begin; ny < end; ++ny) {
      const int64_t n = ny / g.h;
      const int64_t y = ny % g.h;
      const scalar_t* src_n = src + n * g.hs * g.ws * C;
      scalar_t* out_row = out_channels_last ? out + ny * g.w * C : buffer.data();
      for (int64_t x = 0; x < g.w; ++x) {
        const int64_t p = ny * g.w + x;
        Corners<scalar_t> cr;
        pixel_corners(theta, g, n, y, x, offset, cr);
        const scalar_t m = mask ? mask[p] : scalar_t(1);
        const scalar_t a0 = m * cr.w[0], a1 = m * cr.w[1], a2 = m * cr.w[2], a3 = m * cr.w[3];
        const scalar_t* __restrict s0 = cr.index[0] < 0 ? zero : src_n + cr.index[0] * C;
        const scalar_t* __restrict s1 = cr.index[1] < 0 ? zero : src_n + cr.index[1] * C;
        const scalar_t* __restrict s2 = cr.index[2] < 0 ? zero : src_n + cr.index[2] * C;
        const scalar_t* __restrict s3 = cr.index[3] < 0 ? zero : src_n + cr.index[3] * C;
        scalar_t* __restrict o = out_row + x * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          o[c] = b[c] + a0 * s0[c] + a1 * s1[c] + a2 * s2[c] + a3 * s3[c];
        }
      }
      if (!out_channels_last) {
        transpose(out_row, C, out + n * C * hw + y * g.w, hw, g.w, C);
      }
    }
  });
}

// Per pixel: the four dot products <grad_out(p), S(corner)> over all C channels give the gradients
// of the position (through the weights' derivatives) and of the mask (through the weights).
// Not inlined: both call sites run the same machine code, so the reduction order is the same.
template <typename scalar_t>
SQUARED_WARP_NOINLINE void pixel_dots(const scalar_t* __restrict gout, const scalar_t* __restrict src_n,
                                      const scalar_t* zero, const Corners<scalar_t>& cr, int64_t C, scalar_t m,
                                      scalar_t* grad_theta_p, int64_t hw, scalar_t* grad_mask_p) {
  const scalar_t* __restrict s0 = cr.index[0] < 0 ? zero : src_n + cr.index[0] * C;
  const scalar_t* __restrict s1 = cr.index[1] < 0 ? zero : src_n + cr.index[1] * C;
  const scalar_t* __restrict s2 = cr.index[2] < 0 ? zero : src_n + cr.index[2] * C;
  const scalar_t* __restrict s3 = cr.index[3] < 0 ? zero : src_n + cr.index[3] * C;
  scalar_t d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t gc = gout[c];
    d0 += gc * s0[c];
    d1 += gc * s1[c];
    d2 += gc * s2[c];
    d3 += gc * s3[c];
  }
  if (grad_theta_p) {
    grad_theta_p[0] = m * (cr.wdy[0] * d0 + cr.wdy[1] * d1 + cr.wdy[2] * d2 + cr.wdy[3] * d3);
    grad_theta_p[hw] = m * (cr.wdx[0] * d0 + cr.wdx[1] * d1 + cr.wdx[2] * d2 + cr.wdx[3] * d3);
  }
  if (grad_mask_p) {
    *grad_mask_p = cr.w[0] * d0 + cr.w[1] * d1 + cr.w[2] * d2 + cr.w[3] * d3;
  }
}

struct Needs {
  bool source, pos, mask, bias;
};

// Rows (n, y) of the output gradient as W runs of C channels: read in place when the gradient is
// channels-last, else transposed from its (C, W) planes into a per-thread buffer of W · C values
// (only the channels [c0, c0 + cl) that the caller reads).
template <typename scalar_t>
struct GradRows {
  const scalar_t* data;
  bool channels_last;
  int64_t c, h, w;

  const scalar_t* row(int64_t n, int64_t y, int64_t c0, int64_t cl, scalar_t* buffer) const {
    if (channels_last) {
      return data + (n * h + y) * w * c;
    }
    transpose(data + ((n * c + c0) * h + y) * w, h * w, buffer + c0, c, cl, w);
    return buffer;
  }
};

template <typename scalar_t>
void backward_kernel(const GradRows<scalar_t>& gout, const scalar_t* __restrict src, const scalar_t* __restrict theta,
                     const scalar_t* mask, scalar_t* grad_src, bool grad_src_channels_last, scalar_t* grad_theta,
                     scalar_t* grad_mask, scalar_t* grad_bias, const Geometry& g, scalar_t offset, Needs need) {
  using acc_t = at::acc_type<scalar_t, false>;
  const int64_t C = g.c;
  const int64_t hw = g.h * g.w;
  const int64_t src_hw = g.hs * g.ws;
  const std::vector<scalar_t> zeros(C, scalar_t(0));
  const scalar_t* zero = zeros.data();
  const bool dots = need.pos || need.mask;

  // Tasks of the scatter: (image, channel block). Blocks of at least one cache line, and only as
  // many as needed to give every thread work: with one block per image the dot products are
  // computed in the same pass. Per element the accumulation order is the pixel order either way.
  const int64_t line = std::max<int64_t>(1, 64 / static_cast<int64_t>(sizeof(scalar_t)));
  const int64_t max_blocks = std::max<int64_t>(1, (C + line - 1) / line);
  const int64_t want = (2 * at::get_num_threads() + g.n - 1) / g.n;
  const int64_t blocks = (need.source || need.bias) ? std::min(max_blocks, std::max<int64_t>(1, want)) : 0;
  const int64_t block = blocks ? (C + blocks - 1) / blocks : C;
  const bool fused_dots = dots && blocks == 1;

  if (dots && !fused_dots) {
    at::parallel_for(0, g.n * g.h, grain_rows(g.w, C), [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buffer(gout.channels_last ? 0 : g.w * C);
      for (int64_t ny = begin; ny < end; ++ny) {
        const int64_t n = ny / g.h;
        const int64_t y = ny % g.h;
        const scalar_t* src_n = src + n * src_hw * C;
        const scalar_t* grow = gout.row(n, y, 0, C, buffer.data());
        for (int64_t x = 0; x < g.w; ++x) {
          const int64_t p = ny * g.w + x;
          Corners<scalar_t> cr;
          pixel_corners(theta, g, n, y, x, offset, cr);
          pixel_dots(grow + x * C, src_n, zero, cr, C, mask ? mask[p] : scalar_t(1),
                     need.pos ? grad_theta + n * 2 * hw + y * g.w + x : nullptr, hw,
                     need.mask ? grad_mask + p : nullptr);
        }
      }
    });
  }
  if (!blocks) {
    return;
  }
  std::vector<acc_t> bias_parts(need.bias ? g.n * C : 0, acc_t(0));
  at::parallel_for(0, g.n * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> row_sum(block);
    std::vector<scalar_t> buffer(gout.channels_last ? 0 : g.w * C);
    // (N, C, Hs, Ws) gradient: accumulate the block channels-last here, transpose at the end
    const Scratch<scalar_t> local(need.source && !grad_src_channels_last ? src_hw * block : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks;
      const int64_t c0 = (task % blocks) * block;
      const int64_t cl = std::min(block, C - c0);
      if (cl <= 0) {
        continue;
      }
      const scalar_t* src_n = src + n * src_hw * C;
      scalar_t* acc = nullptr;
      int64_t ld = C;
      if (need.source) {
        acc = grad_src_channels_last ? grad_src + n * src_hw * C + c0 : local.data();
        ld = grad_src_channels_last ? C : cl;
        for (int64_t q = 0; q < src_hw; ++q) {
          std::fill_n(acc + q * ld, cl, scalar_t(0));
        }
      }
      for (int64_t y = 0; y < g.h; ++y) {
        if (need.bias) {
          std::fill_n(row_sum.data(), cl, scalar_t(0));
        }
        const scalar_t* grow = gout.row(n, y, c0, cl, buffer.data());
        for (int64_t x = 0; x < g.w; ++x) {
          const int64_t p = (n * g.h + y) * g.w + x;
          const scalar_t* __restrict gp = grow + x * C + c0;
          if (need.bias) {
            scalar_t* __restrict rs = row_sum.data();
#pragma omp simd
            for (int64_t c = 0; c < cl; ++c) {
              rs[c] += gp[c];
            }
          }
          Corners<scalar_t> cr;
          const bool inside = pixel_corners(theta, g, n, y, x, offset, cr);
          const scalar_t m = mask ? mask[p] : scalar_t(1);
          if (fused_dots) {
            pixel_dots(gp, src_n, zero, cr, C, m, need.pos ? grad_theta + n * 2 * hw + y * g.w + x : nullptr, hw,
                       need.mask ? grad_mask + p : nullptr);
          }
          if (!acc || !inside) {
            continue;
          }
          for (int k = 0; k < 4; ++k) {
            if (cr.index[k] < 0) {
              continue;
            }
            const scalar_t a = m * cr.w[k];
            scalar_t* __restrict d = acc + cr.index[k] * ld;
#pragma omp simd
            for (int64_t c = 0; c < cl; ++c) {
              d[c] += a * gp[c];
            }
          }
        }
        if (need.bias) {
          acc_t* part = bias_parts.data() + n * C + c0;
          for (int64_t c = 0; c < cl; ++c) {
            part[c] += static_cast<acc_t>(row_sum[c]);
          }
        }
      }
      if (acc && !grad_src_channels_last) {
        for (int64_t ys = 0; ys < g.hs; ++ys) {
          transpose(acc + ys * g.ws * ld, ld, grad_src + (n * C + c0) * src_hw + ys * g.ws, src_hw, g.ws, cl);
        }
      }
    }
  });
  if (need.bias) {
    for (int64_t c = 0; c < C; ++c) {
      acc_t s = 0;
      for (int64_t n = 0; n < g.n; ++n) {
        s += bias_parts[n * C + c];
      }
      grad_bias[c] = static_cast<scalar_t>(s);
    }
  }
}

bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && t.permute({0, 2, 3, 1}).is_contiguous();
}

Geometry check_and_geometry(const at::Tensor& source_nhwc, const at::Tensor& theta, const at::Tensor& mask,
                            const at::Tensor& bias) {
  TORCH_CHECK(source_nhwc.device().is_cpu() && theta.device().is_cpu(), "squared_warp: CPU tensors only");
  TORCH_CHECK(theta.dim() == 4 && theta.size(1) == 2 && theta.is_contiguous(),
              "squared_warp: theta must be a contiguous (N, 2, H, W) tensor");
  TORCH_CHECK(theta.size(0) == source_nhwc.size(0), "squared_warp: theta and source differ in batch size");
  TORCH_CHECK(theta.scalar_type() == source_nhwc.scalar_type(), "squared_warp: theta and source differ in dtype");
  Geometry g{source_nhwc.size(0), theta.size(2), theta.size(3), source_nhwc.size(1), source_nhwc.size(2),
             source_nhwc.size(3)};
  if (mask.numel()) {
    TORCH_CHECK(mask.is_contiguous() && mask.numel() == g.n * g.h * g.w &&
                    mask.scalar_type() == source_nhwc.scalar_type(),
                "squared_warp: mask must be a contiguous (N, 1, H, W) tensor of the source's dtype");
  }
  if (bias.numel()) {
    TORCH_CHECK(bias.is_contiguous() && bias.numel() == g.c && bias.scalar_type() == source_nhwc.scalar_type(),
                "squared_warp: bias must be a contiguous (C,) tensor of the source's dtype");
  }
  return g;
}

}  // namespace

// out (N, C, H, W) = mask · bilinear(source, Θ + (y, x) + offset) + bias for source (N, C, Hs, Ws);
// mask (N, 1, H, W) and bias (C,) may be empty; the output is channels-last memory when
// ``out_channels_last``, else contiguous. Returns [out, source as a contiguous (N, Hs, Ws, C) tensor], the
// latter for warp_backward (the source itself when it is channels-last).
std::vector<at::Tensor> warp_forward(const at::Tensor& source, const at::Tensor& theta, double offset,
                                     const at::Tensor& mask, const at::Tensor& bias, bool out_channels_last) {
  TORCH_CHECK(source.dim() == 4, "squared_warp: source must be an (N, C, Hs, Ws) tensor");
  TORCH_CHECK(source.device().is_cpu(), "squared_warp: CPU tensors only");
  const bool channels_last = is_channels_last(source);
  at::Tensor source_nhwc;
  if (channels_last) {
    source_nhwc = source.permute({0, 2, 3, 1});
  } else {
    const at::Tensor s = source.contiguous();
    source_nhwc = at::empty({s.size(0), s.size(2), s.size(3), s.size(1)}, s.options());
    AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "squared_warp_to_channels_last", [&] {
      to_channels_last<scalar_t>(s.data_ptr<scalar_t>(), source_nhwc.data_ptr<scalar_t>(), s.size(0), s.size(1),
                                 s.size(2), s.size(3));
    });
  }
  const Geometry g = check_and_geometry(source_nhwc, theta, mask, bias);
  // channels-last strides on a tensor of its own (not a view), so that in-place ops on the output are allowed
  at::Tensor out = at::empty({g.n, g.c, g.h, g.w}, source.options().memory_format(
                                 out_channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous));
  AT_DISPATCH_FLOATING_TYPES(source.scalar_type(), "squared_warp_forward", [&] {
    forward_kernel<scalar_t>(source_nhwc.data_ptr<scalar_t>(), theta.data_ptr<scalar_t>(),
                             mask.numel() ? mask.data_ptr<scalar_t>() : nullptr,
                             bias.numel() ? bias.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(),
                             out_channels_last, g, static_cast<scalar_t>(offset));
  });
  return {out, source_nhwc};
}

// Gradients of warp_forward for grad_out (N, C, H, W) in any memory format: [source (N, C, Hs, Ws),
// channels-last memory when ``source_channels_last`` else contiguous; Θ (N, 2, H, W); mask
// (N, 1, H, W); bias (C,)]. The ones not asked for are empty.
std::vector<at::Tensor> warp_backward(const at::Tensor& grad_out, const at::Tensor& source_nhwc,
                                      const at::Tensor& theta, double offset, const at::Tensor& mask,
                                      bool source_channels_last, bool need_source, bool need_theta, bool need_mask,
                                      bool need_bias) {
  TORCH_CHECK(source_nhwc.dim() == 4 && source_nhwc.is_contiguous(),
              "squared_warp: source_nhwc must be a contiguous (N, Hs, Ws, C) tensor");
  const Geometry g = check_and_geometry(source_nhwc, theta, mask, at::empty({0}, source_nhwc.options()));
  TORCH_CHECK(grad_out.dim() == 4 && grad_out.size(0) == g.n && grad_out.size(1) == g.c && grad_out.size(2) == g.h &&
                  grad_out.size(3) == g.w && grad_out.scalar_type() == source_nhwc.scalar_type(),
              "squared_warp: grad_out must be an (N, C, H, W) tensor of the source's dtype");
  // channels-last memory is read in place, anything else as contiguous (N, C, H, W) planes
  const bool grad_channels_last = is_channels_last(grad_out);
  const at::Tensor gout = grad_channels_last ? grad_out : grad_out.contiguous();
  need_mask = need_mask && mask.numel();
  const auto opts = source_nhwc.options();
  const at::Tensor none = at::empty({0}, opts);
  at::Tensor grad_source = !need_source ? none
                                        : at::empty({g.n, g.c, g.hs, g.ws},
                                                    opts.memory_format(source_channels_last ? at::MemoryFormat::ChannelsLast
                                                                                            : at::MemoryFormat::Contiguous));
  at::Tensor grad_theta = need_theta ? at::empty({g.n, 2, g.h, g.w}, opts) : none;
  at::Tensor grad_mask = need_mask ? at::empty({g.n, 1, g.h, g.w}, opts) : none;
  at::Tensor grad_bias = need_bias ? at::empty({g.c}, opts) : none;
  if (g.n * g.h * g.w * g.c == 0) {  // nothing sampled: zero gradients
    for (at::Tensor* t : {&grad_source, &grad_theta, &grad_mask, &grad_bias}) {
      t->zero_();
    }
    return {grad_source, grad_theta, grad_mask, grad_bias};
  }
  AT_DISPATCH_FLOATING_TYPES(source_nhwc.scalar_type(), "squared_warp_backward", [&] {
    const GradRows<scalar_t> rows{gout.data_ptr<scalar_t>(), grad_channels_last, g.c, g.h, g.w};
    backward_kernel<scalar_t>(rows, source_nhwc.data_ptr<scalar_t>(), theta.data_ptr<scalar_t>(),
                              mask.numel() ? mask.data_ptr<scalar_t>() : nullptr,
                              need_source ? grad_source.data_ptr<scalar_t>() : nullptr, source_channels_last,
                              need_theta ? grad_theta.data_ptr<scalar_t>() : nullptr,
                              need_mask ? grad_mask.data_ptr<scalar_t>() : nullptr,
                              need_bias ? grad_bias.data_ptr<scalar_t>() : nullptr, g, static_cast<scalar_t>(offset),
                              Needs{need_source, need_theta, need_mask, need_bias});
  });
  return {grad_source, grad_theta, grad_mask, grad_bias};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Fused bilinear warp (mask, bias) of the squared deformable convolution, CPU";
  m.def("warp_forward", &warp_forward, "Warp forward: [out, source_nhwc]", py::arg("source"), py::arg("theta"),
        py::arg("offset"), py::arg("mask"), py::arg("bias"), py::arg("out_channels_last"));
  m.def("warp_backward", &warp_backward, "Warp backward: [grad source, grad theta, grad mask, grad bias]",
        py::arg("grad_out"), py::arg("source_nhwc"), py::arg("theta"), py::arg("offset"), py::arg("mask"),
        py::arg("source_channels_last"), py::arg("need_source"), py::arg("need_theta"), py::arg("need_mask"),
        py::arg("need_bias"));
}
