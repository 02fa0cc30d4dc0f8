// A fused LSTM recurrence for JAX on x86-64 CPUs with AVX2 and FMA, called through XLA's FFI
// (`layers/native_lstm.py` builds, loads and calls it; `layers/jax_recurrent.py` is the XLA loop
// it replaces where it applies, and the two are tested equal).
//
// Why our own code: XLA runs each step of a scan as separate thunks (a product that repacks the
// recurrent kernel at every step, then element-wise fusions, each handed to the thread pool), and
// neither XLA nor JAX offers a fused recurrent op on a CPU; oneDNN's, which `torch.nn.LSTM` runs,
// is not reachable from JAX. Here the recurrent kernel is packed once per call, each thread owns a
// slice of the units (all four gates of them) for the whole sequence, and one spin barrier a step
// joins the threads: the products run near the CPU's peak (benchmarks/RESULTS.md, session 28).
//
// Layouts (row-major, float32): `a (T, B, 4U)` the input products with the bias, gates [i f g o];
// `rk (U, 4U)` the recurrent kernel; states `(B, U)`; `mask (T, B)` bool or empty (no mask: every
// step valid); a masked step carries both states over and outputs the carried `h`, as Keras does.
//
// lstm_forward(a, rk, h0, c0, mask; keep) -> outputs (T, B, U), h_T, c_T, gates (T, B, 4U),
//     cells (T, B, U): with keep=1 the gates' activations and every c_t are written for the
//     backward pass (with keep=0 those two results are empty, shape (0,)).
// lstm_backward(rk, gates, cells, c0, mask, d_outputs, d_hT, d_cT) -> d_z (T, B, 4U), d_h0, d_c0:
//     d_z, the cotangent of each step's pre-activations (zero on masked steps); the weight and
//     input gradients are products over all steps, left to XLA.

#include <immintrin.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kPanel = 16;  // columns of one packed panel: two AVX2 registers
constexpr int kRows = 6;    // rows of the micro-kernel: 12 accumulators + 2 panel loads + 1 broadcast

// C[0:MR, 0:16] = A[0:MR, 0:K] (rows lda apart) times one packed panel (K rows of 16). Named
// accumulators, not an array: GCC spills an array of them to the stack at every k (2.5x slower).
#define RNN_SUITE_ROW(i)                                                   \
  if constexpr (MR > i) {                                                  \
    const __m256 x = _mm256_broadcast_ss(a + i * lda + k);                 \
    c##i##0 = _mm256_fmadd_ps(x, b0, c##i##0);                             \
    c##i##1 = _mm256_fmadd_ps(x, b1, c##i##1);                             \
  }
#define RNN_SUITE_STORE(i)                                                 \
  if constexpr (MR > i) {                                                  \
    _mm256_storeu_ps(c + i * ldc, c##i##0);                                \
    _mm256_storeu_ps(c + i * ldc + 8, c##i##1);                            \
  }
template <int MR>
inline void MicroKernel(const float* a, int64_t lda, const float* panel, int64_t k_size, float* c, int64_t ldc) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t k = 0; k < k_size; ++k) {
    const __m256 b0 = _mm256_loadu_ps(panel + k * kPanel), b1 = _mm256_loadu_ps(panel + k * kPanel + 8);
    RNN_SUITE_ROW(0) RNN_SUITE_ROW(1) RNN_SUITE_ROW(2) RNN_SUITE_ROW(3) RNN_SUITE_ROW(4) RNN_SUITE_ROW(5)
  }
  RNN_SUITE_STORE(0) RNN_SUITE_STORE(1) RNN_SUITE_STORE(2) RNN_SUITE_STORE(3) RNN_SUITE_STORE(4) RNN_SUITE_STORE(5)
}
#undef RNN_SUITE_ROW
#undef RNN_SUITE_STORE

// C (rows x panels * 16, ldc) = A (rows x K, lda) times `panels` packed panels.
void Product(const float* a, int64_t lda, int64_t rows, const float* packed, int64_t panels, int64_t k_size,
             float* c, int64_t ldc) {
  for (int64_t p = 0; p < panels; ++p) {
    const float* panel = packed + p * k_size * kPanel;
    float* cp = c + p * kPanel;
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows) MicroKernel<kRows>(a + r * lda, lda, panel, k_size, cp + r * ldc, ldc);
    switch (rows - r) {
      case 5: MicroKernel<5>(a + r * lda, lda, panel, k_size, cp + r * ldc, ldc); break;
      case 4: MicroKernel<4>(a + r * lda, lda, panel, k_size, cp + r * ldc, ldc); break;
      case 3: MicroKernel<3>(a + r * lda, lda, panel, k_size, cp + r * ldc, ldc); break;
      case 2: MicroKernel<2>(a + r * lda, lda, panel, k_size, cp + r * ldc, ldc); break;
      case 1: MicroKernel<1>(a + r * lda, lda, panel, k_size, cp + r * ldc, ldc); break;
      default: break;
    }
  }
}

// exp, sigmoid and tanh on 8 floats (Cephes' expf polynomial, about 1 ulp; the sigmoid and tanh
// built on it agree with XLA's to ~1e-7 absolute, inside the tests' float32 tolerance).
inline __m256 Exp(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
inline __m256 Sigmoid(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.f);
  return _mm256_div_ps(one, _mm256_add_ps(one, Exp(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}
inline __m256 Tanh(__m256 x) {  // 1 - 2 / (1 + e^{2x}): exact at 0, no cancellation near +-1
  const __m256 one = _mm256_set1_ps(1.f);
  return _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.f), _mm256_add_ps(one, Exp(_mm256_add_ps(x, x)))));
}

// A barrier for threads that each own a core: spinning costs less than sleeping at one a step.
class SpinBarrier {
 public:
  explicit SpinBarrier(int parties) : parties_(parties) {}
  void Wait() {
    const int generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == parties_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_acq_rel);
    } else {
      // Spin (a step's wait is microseconds), then yield: where the cores are oversubscribed, a
      // thread spinning forever would hold the core that the one it waits for needs.
      for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
        if (spins < 4096) _mm_pause(); else std::this_thread::yield();
      }
    }
  }

 private:
  const int parties_;
  std::atomic<int> arrived_{0};
  std::atomic<int> generation_{0};
};

// The units split in slices of multiples of 8 (one register), one slice a thread: one thread per
// core this process may use, at most one per 64 units (a floor not tuned: a thread's share of a
// step should stay well above the cost of the barrier that joins them).
std::vector<int64_t> UnitSlices(int64_t units) {
  cpu_set_t set;
  int cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  const int64_t groups = units / 8;
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>({static_cast<int64_t>(cpus), units / 64, groups}));
  std::vector<int64_t> bounds(threads + 1, 0);
  for (int64_t t = 0; t <= threads; ++t) bounds[t] = 8 * (groups * t / threads);
  return bounds;
}

// Runs body(thread index) on `threads` threads (the caller's is index 0) and joins them. Calls
// on several threads take turns (XLA may run two independent calls at once, e.g. the two
// directions of a bidirectional layer): each already uses every core; a one-thread call runs freely.
template <typename Body>
void OnThreads(int64_t threads, Body body) {
  static std::mutex turns;
  std::unique_lock<std::mutex> turn(turns, std::defer_lock);
  if (threads > 1) turn.lock();
  std::vector<std::thread> others;
  for (int64_t t = 1; t < threads; ++t) others.emplace_back(body, t);
  body(0);
  for (auto& thread : others) thread.join();
}

int64_t Panels(int64_t columns) { return (columns + kPanel - 1) / kPanel; }

// A call's sizes, from its (T, B, 4U) tensor and the recurrent kernel (U, 4U), checked.
struct Sizes {
  int64_t steps = 0, batch = 0, width = 0, units = 0;
};
ffi::Error ReadSizes(const ffi::AnyBuffer::Dimensions& sequence, const ffi::AnyBuffer::Dimensions& rk, Sizes& sizes) {
  if (sequence.size() != 3) return ffi::Error::InvalidArgument("lstm_cpu: a and gates must be (T, B, 4U)");
  sizes = {sequence[0], sequence[1], sequence[2], sequence[2] / 4};
  if (rk.size() != 2 || rk[0] != sizes.units || rk[1] != sizes.width || sizes.width % 32 != 0 || sizes.steps < 1 ||
      sizes.batch < 1)
    return ffi::Error::InvalidArgument("lstm_cpu: shapes must be a (T, B, 4U), rk (U, 4U), U a multiple of 8");
  return ffi::Error::Success();
}

ffi::Error LstmForwardImpl(ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> rk, ffi::Buffer<ffi::F32> h0,
                           ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::PRED> mask,
                           ffi::ResultBuffer<ffi::F32> outputs, ffi::ResultBuffer<ffi::F32> h_last,
                           ffi::ResultBuffer<ffi::F32> c_last, ffi::ResultBuffer<ffi::F32> gates_out,
                           ffi::ResultBuffer<ffi::F32> cells_out, int32_t keep) {
  Sizes sizes;
  if (auto error = ReadSizes(a.dimensions(), rk.dimensions(), sizes); error.failure()) return error;
  const int64_t steps = sizes.steps, batch = sizes.batch, width = sizes.width, units = sizes.units;
  const bool masked = mask.element_count() != 0;
  const float* a_data = a.typed_data();
  const float* rk_data = rk.typed_data();
  const bool* m = masked ? mask.typed_data() : nullptr;
  float* out = outputs->typed_data();
  float* gates = keep ? gates_out->typed_data() : nullptr;
  float* cells = keep ? cells_out->typed_data() : nullptr;
  float* h_end = h_last->typed_data();
  float* c_end = c_last->typed_data();
  const std::vector<int64_t> bounds = UnitSlices(units);
  const int64_t threads = static_cast<int64_t>(bounds.size()) - 1;
  SpinBarrier barrier(static_cast<int>(threads));

  OnThreads(threads, [&](int64_t t) {
    const int64_t first = bounds[t], own = bounds[t + 1] - bounds[t], columns = 4 * own;
    const int64_t panels = Panels(columns), ldz = panels * kPanel;
    // This thread's columns of rk, [i f g o] of its units, packed once: panel p, row k, column j.
    std::vector<float> packed(panels * units * kPanel, 0.f);
    for (int64_t col = 0; col < columns; ++col) {
      const int64_t source = (col / own) * units + first + col % own;
      float* dst = packed.data() + (col / kPanel) * units * kPanel + col % kPanel;
      for (int64_t k = 0; k < units; ++k) dst[k * kPanel] = rk_data[k * width + source];
    }
    std::vector<float> z(batch * ldz), c(batch * own);
    for (int64_t r = 0; r < batch; ++r) std::memcpy(&c[r * own], c0.typed_data() + r * units + first, own * 4);
    for (int64_t s = 0; s < steps; ++s) {
      const float* h_prev = s == 0 ? h0.typed_data() : out + (s - 1) * batch * units;
      Product(h_prev, units, batch, packed.data(), panels, units, z.data(), ldz);
      const float* a_s = a_data + s * batch * width;
      for (int64_t r = 0; r < batch; ++r) {
        const float* zr = &z[r * ldz];
        const float* ar = a_s + r * width + first;
        float* h_row = out + (s * batch + r) * units + first;
        float* c_row = &c[r * own];
        if (masked && !m[s * batch + r]) {  // carried over: h_{s-1} (c stays in c_row)
          std::memcpy(h_row, h_prev + r * units + first, own * 4);
          if (keep)  // never read (the step's d_z is zero), written so that no result is left unset
            for (int64_t g = 0; g < 4; ++g) std::memset(gates + (s * batch + r) * width + g * units + first, 0, own * 4);
        } else {
          for (int64_t j = 0; j < own; j += 8) {
            const __m256 i = Sigmoid(_mm256_add_ps(_mm256_loadu_ps(zr + j), _mm256_loadu_ps(ar + j)));
            const __m256 f = Sigmoid(_mm256_add_ps(_mm256_loadu_ps(zr + own + j), _mm256_loadu_ps(ar + units + j)));
            const __m256 g = Tanh(_mm256_add_ps(_mm256_loadu_ps(zr + 2 * own + j), _mm256_loadu_ps(ar + 2 * units + j)));
            const __m256 o = Sigmoid(_mm256_add_ps(_mm256_loadu_ps(zr + 3 * own + j), _mm256_loadu_ps(ar + 3 * units + j)));
            const __m256 c_new = _mm256_fmadd_ps(f, _mm256_loadu_ps(c_row + j), _mm256_mul_ps(i, g));
            _mm256_storeu_ps(c_row + j, c_new);
            _mm256_storeu_ps(h_row + j, _mm256_mul_ps(o, Tanh(c_new)));
            if (keep) {
              float* gr = gates + (s * batch + r) * width + first + j;
              _mm256_storeu_ps(gr, i);
              _mm256_storeu_ps(gr + units, f);
              _mm256_storeu_ps(gr + 2 * units, g);
              _mm256_storeu_ps(gr + 3 * units, o);
            }
          }
        }
        if (keep) std::memcpy(cells + (s * batch + r) * units + first, c_row, own * 4);
      }
      barrier.Wait();  // every unit of h_s written before any thread's next product reads it
    }
    for (int64_t r = 0; r < batch; ++r) {
      std::memcpy(h_end + r * units + first, out + ((steps - 1) * batch + r) * units + first, own * 4);
      std::memcpy(c_end + r * units + first, &c[r * own], own * 4);
    }
  });
  return ffi::Error::Success();
}

ffi::Error LstmBackwardImpl(ffi::Buffer<ffi::F32> rk, ffi::Buffer<ffi::F32> gates, ffi::Buffer<ffi::F32> cells,
                            ffi::Buffer<ffi::F32> c0, ffi::Buffer<ffi::PRED> mask, ffi::Buffer<ffi::F32> d_outputs,
                            ffi::Buffer<ffi::F32> d_h_last, ffi::Buffer<ffi::F32> d_c_last,
                            ffi::ResultBuffer<ffi::F32> d_z_out, ffi::ResultBuffer<ffi::F32> d_h0,
                            ffi::ResultBuffer<ffi::F32> d_c0) {
  Sizes sizes;
  if (auto error = ReadSizes(gates.dimensions(), rk.dimensions(), sizes); error.failure()) return error;
  const int64_t steps = sizes.steps, batch = sizes.batch, width = sizes.width, units = sizes.units;
  const bool masked = mask.element_count() != 0;
  const float* rk_data = rk.typed_data();
  const float* act = gates.typed_data();
  const float* cs = cells.typed_data();
  const float* d_out = d_outputs.typed_data();
  const bool* m = masked ? mask.typed_data() : nullptr;
  float* d_z = d_z_out->typed_data();
  const std::vector<int64_t> bounds = UnitSlices(units);
  const int64_t threads = static_cast<int64_t>(bounds.size()) - 1;
  SpinBarrier barrier(static_cast<int>(threads));

  OnThreads(threads, [&](int64_t t) {
    const int64_t first = bounds[t], own = bounds[t + 1] - bounds[t];
    const int64_t panels = Panels(own), ldh = panels * kPanel;
    // rk^T's columns of this thread's units, packed once: d_h_prev[:, own] = d_z (B, 4U) rk^T[:, own].
    std::vector<float> packed(panels * width * kPanel, 0.f);
    for (int64_t col = 0; col < own; ++col) {
      float* dst = packed.data() + (col / kPanel) * width * kPanel + col % kPanel;
      const float* src = rk_data + (first + col) * width;
      for (int64_t k = 0; k < width; ++k) dst[k * kPanel] = src[k];
    }
    // d_h: the product's output (B, ldh), the cotangent of h_{s-1} from step s; d_c: of c.
    std::vector<float> d_h(batch * ldh, 0.f), d_c(batch * own), passed(masked ? batch * own : 0);
    for (int64_t r = 0; r < batch; ++r) {
      std::memcpy(&d_h[r * ldh], d_h_last.typed_data() + r * units + first, own * 4);
      std::memcpy(&d_c[r * own], d_c_last.typed_data() + r * units + first, own * 4);
    }
    std::vector<uint8_t> carried(batch);  // rows of this step whose mask is off
    for (int64_t s = steps - 1; s >= 0; --s) {
      for (int64_t r = 0; r < batch; ++r) {
        float* dh = &d_h[r * ldh];
        float* dc = &d_c[r * own];
        const float* dor = d_out + (s * batch + r) * units + first;
        float* dzr = d_z + (s * batch + r) * width + first;
        carried[r] = masked && !m[s * batch + r];
        if (carried[r]) {  // passes d_h + d_out and d_c through; no gradient of its own
          for (int64_t j = 0; j < own; ++j) dh[j] += dor[j];
          for (int64_t g = 0; g < 4; ++g) std::memset(dzr + g * units, 0, own * 4);
          continue;
        }
        const float* gr = act + (s * batch + r) * width + first;
        const float* c_row = cs + (s * batch + r) * units + first;
        const float* c_prev = s == 0 ? c0.typed_data() + r * units + first : cs + ((s - 1) * batch + r) * units + first;
        const __m256 one = _mm256_set1_ps(1.f);
        for (int64_t j = 0; j < own; j += 8) {
          const __m256 i = _mm256_loadu_ps(gr + j), f = _mm256_loadu_ps(gr + units + j);
          const __m256 g = _mm256_loadu_ps(gr + 2 * units + j), o = _mm256_loadu_ps(gr + 3 * units + j);
          const __m256 tanh_c = Tanh(_mm256_loadu_ps(c_row + j));
          const __m256 dh_j = _mm256_add_ps(_mm256_loadu_ps(dh + j), _mm256_loadu_ps(dor + j));
          const __m256 dc_j = _mm256_fmadd_ps(_mm256_mul_ps(dh_j, o), _mm256_fnmadd_ps(tanh_c, tanh_c, one),
                                              _mm256_loadu_ps(dc + j));
          _mm256_storeu_ps(dzr + j, _mm256_mul_ps(_mm256_mul_ps(dc_j, g), _mm256_mul_ps(i, _mm256_sub_ps(one, i))));
          _mm256_storeu_ps(dzr + units + j, _mm256_mul_ps(_mm256_mul_ps(dc_j, _mm256_loadu_ps(c_prev + j)),
                                                          _mm256_mul_ps(f, _mm256_sub_ps(one, f))));
          _mm256_storeu_ps(dzr + 2 * units + j, _mm256_mul_ps(_mm256_mul_ps(dc_j, i), _mm256_fnmadd_ps(g, g, one)));
          _mm256_storeu_ps(dzr + 3 * units + j, _mm256_mul_ps(_mm256_mul_ps(dh_j, tanh_c),
                                                              _mm256_mul_ps(o, _mm256_sub_ps(one, o))));
          _mm256_storeu_ps(dc + j, _mm256_mul_ps(dc_j, f));
        }
      }
      barrier.Wait();  // every unit's d_z of step s written before the products read whole rows
      const float* dz_s = d_z + s * batch * width;
      // Carried rows keep their passed-through d_h (their d_z rows are zero, so the product's are too).
      for (int64_t r = 0; r < batch; ++r)
        if (carried[r]) std::memcpy(&passed[r * own], &d_h[r * ldh], own * 4);
      Product(dz_s, width, batch, packed.data(), panels, width, d_h.data(), ldh);
      for (int64_t r = 0; r < batch; ++r)
        if (carried[r]) std::memcpy(&d_h[r * ldh], &passed[r * own], own * 4);
    }
    for (int64_t r = 0; r < batch; ++r) {
      std::memcpy(d_h0->typed_data() + r * units + first, &d_h[r * ldh], own * 4);
      std::memcpy(d_c0->typed_data() + r * units + first, &d_c[r * own], own * 4);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnSuiteLstmForward, LstmForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("keep"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(RnnSuiteLstmBackward, LstmBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

// Whether this CPU runs the kernels (the library is built with -mavx2 -mfma).
extern "C" int RnnSuiteCpuSupported() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
