// A caching CPU allocator for funcrl.cpu_allocator: freed blocks are kept in per-size free lists
// and handed out again, instead of going back to malloc.
//
// Why: Inductor's compiled scan loops allocate every body output on every step. glibc serves
// torch's 64-byte-aligned requests through posix_memalign, outside its thread cache, and a
// one-seed pure PPO iteration spent ~19% of its time in malloc and free (perf).
//
// Built at first use against the running torch's headers (funcrl/cpu_allocator.py); called
// through ctypes, so it needs only c10.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/util/Exception.h>

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <vector>

namespace {

constexpr size_t kAlign = 64;   // c10's CPU alignment (MKL and AVX-512 loads want it)
constexpr size_t kHeader = 64;  // before each block: its size class; keeps the payload aligned
// Up to 256 KiB, classes in 64-byte steps; up to 64 MiB, eighths of a power of two (a block wastes
// at most 1/8 of its size). Larger requests are never cached.
constexpr size_t kFineLimit = size_t{256} << 10;
constexpr size_t kFineClasses = kFineLimit / kAlign;
constexpr int kFineLog2 = 18;
constexpr int kCoarseLog2 = 26;
constexpr size_t kCoarseLimit = size_t{1} << kCoarseLog2;
constexpr size_t kClasses = kFineClasses + 1 + (kCoarseLog2 - kFineLog2) * 8;
constexpr size_t kUncached = kClasses;

// The size class of a request of n > 0 bytes and the bytes a block of that class holds.
size_t size_class(size_t n, size_t* bytes) {
  if (n <= kFineLimit) {
    size_t c = (n + kAlign - 1) / kAlign;
    *bytes = c * kAlign;
    return c;
  }
  if (n <= kCoarseLimit) {
    int p = 63 - __builtin_clzll(n - 1);  // 2^p < n <= 2^(p+1)
    size_t step = (size_t{1} << p) / 8;
    size_t k = (n - 1 - (size_t{1} << p)) / step;
    *bytes = (size_t{1} << p) + (k + 1) * step;
    return kFineClasses + 1 + (p - kFineLog2) * 8 + k;
  }
  *bytes = n;
  return kUncached;
}

struct Header {
  size_t size_class;
  size_t bytes;
};

// Uncontended on the paths this serves (one thread); a spin lock costs less than a mutex there.
struct SpinLock {
  std::atomic_flag flag = ATOMIC_FLAG_INIT;
  void lock() {
    while (flag.test_and_set(std::memory_order_acquire)) __builtin_ia32_pause();
  }
  void unlock() { flag.clear(std::memory_order_release); }
};

struct Cache {
  SpinLock lock;
  std::vector<void*> free_blocks[kClasses];
  size_t cached_bytes = 0;
  size_t max_cached_bytes = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  bool enabled = false;
  c10::Allocator* previous = nullptr;
};

// A child forked while another thread held the lock would wait on it forever: the child has
// only the forking thread, so it starts unlocked.
void unlock_in_child();

// Never destroyed: a tensor freed during interpreter shutdown still finds it.
Cache& cache() {
  static Cache* c = [] {
    pthread_atfork(nullptr, nullptr, &unlock_in_child);
    return new Cache();
  }();
  return *c;
}

void unlock_in_child() { cache().lock.unlock(); }

void delete_block(void* payload) {
  if (payload == nullptr) return;
  void* base = static_cast<char*>(payload) - kHeader;
  const Header* h = static_cast<const Header*>(base);
  Cache& c = cache();
  {
    std::lock_guard<SpinLock> g(c.lock);
    if (c.enabled && h->size_class != kUncached &&
        c.cached_bytes + h->bytes <= c.max_cached_bytes) {
      c.free_blocks[h->size_class].push_back(base);
      c.cached_bytes += h->bytes;
      return;
    }
  }
  std::free(base);
}

struct CachingCPUAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    const c10::Device cpu(c10::DeviceType::CPU);
    if (n == 0) return {nullptr, nullptr, &delete_block, cpu};
    size_t bytes = 0;
    const size_t cls = size_class(n, &bytes);
    void* base = nullptr;
    Cache& c = cache();
    if (cls != kUncached) {
      std::lock_guard<SpinLock> g(c.lock);
      auto& blocks = c.free_blocks[cls];
      if (!blocks.empty()) {
        base = blocks.back();
        blocks.pop_back();
        c.cached_bytes -= bytes;
        ++c.hits;
      } else {
        ++c.misses;
      }
    }
    if (base == nullptr) {
      TORCH_CHECK(bytes <= SIZE_MAX - kHeader && posix_memalign(&base, kAlign, bytes + kHeader) == 0,
                  "funcrl.cpu_allocator: not enough memory: tried to allocate ", n, " bytes");
      Header* h = static_cast<Header*>(base);
      h->size_class = cls;
      h->bytes = bytes;
    }
    void* payload = static_cast<char*>(base) + kHeader;
    return {payload, payload, &delete_block, cpu};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &delete_block; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

CachingCPUAllocator the_allocator;

void release_cached(Cache& c) {
  for (auto& blocks : c.free_blocks) {
    for (void* b : blocks) std::free(b);
    std::vector<void*>().swap(blocks);
  }
  c.cached_bytes = 0;
}

}  // namespace

extern "C" {

// 0: installed; 1: already installed; 2: another allocator of higher priority stays in place.
int funcrl_cpu_cache_enable(size_t max_cached_bytes) {
  Cache& c = cache();
  std::lock_guard<SpinLock> g(c.lock);
  if (c.enabled) return 1;
  c10::Allocator* previous = c10::GetCPUAllocator();
  c10::SetCPUAllocator(&the_allocator, 0);
  if (c10::GetCPUAllocator() != &the_allocator) return 2;
  c.previous = previous;
  c.max_cached_bytes = max_cached_bytes;
  c.hits = c.misses = 0;
  c.enabled = true;
  return 0;
}

// Puts the previous allocator back (unless another was installed since) and frees the cached
// blocks. Blocks still in use are freed by their tensors as usual. 0: done; 1: was not installed.
int funcrl_cpu_cache_disable() {
  Cache& c = cache();
  std::lock_guard<SpinLock> g(c.lock);
  if (!c.enabled) return 1;
  if (c10::GetCPUAllocator() == &the_allocator) c10::SetCPUAllocator(c.previous, 0);
  c.enabled = false;
  release_cached(c);
  return 0;
}

// out[0]: cached bytes, out[1]: hits, out[2]: misses, out[3]: 1 while installed.
void funcrl_cpu_cache_stats(uint64_t* out) {
  Cache& c = cache();
  std::lock_guard<SpinLock> g(c.lock);
  out[0] = c.cached_bytes;
  out[1] = c.hits;
  out[2] = c.misses;
  out[3] = c.enabled ? 1 : 0;
}

// For tests: the class of an n-byte request and its block's bytes.
uint64_t funcrl_cpu_cache_size_class(uint64_t n, uint64_t* bytes) {
  size_t b = 0;
  size_t cls = size_class(n, &b);
  *bytes = b;
  return cls;
}

uint64_t funcrl_cpu_cache_uncached_class() { return kUncached; }
}
