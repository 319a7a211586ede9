/* The elementwise steps of the RSSM imagination loop (world_models/fused_imagine.py), each one pass over
   its rows. Eager PyTorch takes 2-4 passes per step (an ELU is clamp, exp, sub, max); at 1000 x 200 these
   passes cost a quarter of the loop's time and evict the matmuls' operands from cache.

   Compiled on first use by world_models/native/__init__.py. All arrays are float32, row-major, with rows
   `ld` elements apart. The math is written without calls or branches, so that the compiler vectorizes
   every loop (checked with gcc -O3 -march=native -fopt-info-vec). */
#include <stdint.h>
#include <string.h>

/* min and max in the form of the vector instructions (x86's minps(a, b) is `a < b ? a : b`): one instruction
   each, returning b when either is NaN. With the operand that may be NaN second, every kernel passes NaN
   through, as PyTorch does, so that a diverged model shows. */
static inline float min_f32(float a, float b) { return a < b ? a : b; }
static inline float max_f32(float a, float b) { return a > b ? a : b; }

/* exp(x) = 2^n e^r with n = round(x / ln 2) and r = x - n ln 2 in [-ln 2 / 2, ln 2 / 2] (ln 2 in two parts, the
   first exact in float32, so r has no cancellation error). e^r is its Taylor polynomial of degree 7
   (truncation error below 5.2e-9 relative on that range); 2^n is built in the exponent bits. x is clamped
   to [-87.3, 88.3], where 2^n stays a normal float32, so that n + 127 fits the exponent field. */
static inline float exp_f32(float x) {
    x = min_f32(88.3f, max_f32(-87.3f, x));
    float n = __builtin_rintf(x * 1.44269504088896341f);
    float r = (x - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float p = 1.0f + r * (1.0f + r * (1.0f / 2 + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120
              + r * (1.0f / 720 + r * (1.0f / 5040)))))));
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}

static inline float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

/* tanh(x) = 1 - 2 / (1 + e^{2x}); absolute error about 1e-7 near 0, exact limits +-1. */
static inline float tanh_f32(float x) { return 1.0f - 2.0f / (1.0f + exp_f32(2.0f * x)); }

/* softplus(x) = max(x, 0) + log(1 + t), t = e^{-|x|} in (0, 1]; log(1 + t) = 2 atanh(s), s = t / (2 + t) in
   (0, 1/3], by the series 2 (s + s^3/3 + ... + s^13/13) (truncation error below 1e-8). */
static inline float softplus_f32(float x) {
    float t = exp_f32(-__builtin_fabsf(x));
    float s = t / (2.0f + t), s2 = s * s;
    float series = 1.0f + s2 * (1.0f / 3 + s2 * (1.0f / 5 + s2 * (1.0f / 7 + s2 * (1.0f / 9 + s2 * (1.0f / 11
                   + s2 * (1.0f / 13))))));
    return (x > 0.0f ? x : 0.0f) + 2.0f * s * series;
}

/* ELU(x) = max(x, e^{min(x, 0)} - 1), since e^x - 1 >= x everywhere. */
static inline float elu_f32(float x) { return max_f32(x, exp_f32(min_f32(0.0f, x)) - 1.0f); }

/* x = ELU(x) in place. */
void elu_rows(float *x, long rows, long cols, long ld) {
    for (long i = 0; i < rows; i++) {
        float *restrict xi = x + i * ld;
        for (long j = 0; j < cols; j++) xi[j] = elu_f32(xi[j]);
    }
}

/* acc += ELU(y): the reward MLP's last hidden layer summed over the horizon. */
void add_elu_rows(float *acc, long ld_acc, const float *y, long ld_y, long rows, long cols) {
    for (long i = 0; i < rows; i++) {
        float *restrict a = acc + i * ld_acc;
        const float *restrict yi = y + i * ld_y;
        for (long j = 0; j < cols; j++) a[j] += elu_f32(yi[j]);
    }
}

/* The GRU's update from its gate pre-activations (PyTorch's GRU cell, hidden size D):
     r = sigmoid(ru[:, :D]),  u = sigmoid(ru[:, D:]),  n = tanh(gi_n + r * gh_n),  h = n + u (h_prev - n). */
void gru_update_rows(float *h, long ld_h, const float *ru, long ld_ru, const float *gi_n, long ld_gi,
                     const float *gh_n, long ld_gh, const float *h_prev, long ld_hp, long rows, long D) {
    for (long i = 0; i < rows; i++) {
        float *restrict hi = h + i * ld_h;
        const float *restrict rui = ru + i * ld_ru, *restrict gi = gi_n + i * ld_gi,
                    *restrict gh = gh_n + i * ld_gh, *restrict hp = h_prev + i * ld_hp;
        for (long j = 0; j < D; j++) {
            float r = sigmoid_f32(rui[j]), u = sigmoid_f32(rui[D + j]);
            float n = tanh_f32(gi[j] + r * gh[j]);
            hi[j] = n + u * (hp[j] - n);
        }
    }
}

/* z = mu + (softplus(raw) + min_std) eps, with [mu | raw] the prior head's output (2 D columns). */
void sample_gaussian_rows(float *z, long ld_z, const float *mu_raw, long ld_mr, const float *eps, long ld_eps,
                          float min_std, long rows, long D) {
    for (long i = 0; i < rows; i++) {
        float *restrict zi = z + i * ld_z;
        const float *restrict m = mu_raw + i * ld_mr, *restrict e = eps + i * ld_eps;
        for (long j = 0; j < D; j++) zi[j] = m[j] + (softplus_f32(m[D + j]) + min_std) * e[j];
    }
}
