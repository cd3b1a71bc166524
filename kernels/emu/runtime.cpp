// Host emulator runtime: runs the kernels of kernels/*.cu on the CPU.
// One block runs on one pool thread; its CUDA threads are fibers that switch only at
// __syncthreads() and warp *_sync intrinsics. Errors come back through the C entry
// point cudaenc_emu_launch as text naming the kernel; nothing aborts or hangs.
#include "shim.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) && !defined(CUDAENC_EMU_UCONTEXT)
#define CUDAENC_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUDAENC_ASAN 1
#endif

__thread uint3 threadIdx;
__thread uint3 blockIdx;
__thread uint3 blockDim;
__thread uint3 gridDim;

namespace cudaenc_emu {
namespace {

struct Kernel {
    std::string name;
    void (*fn)();
    Trampoline tramp;
    std::vector<unsigned> sizes;
    std::string kinds;
    int registrations = 0;
};
std::map<std::string, Kernel>& registry() {
    static auto* r = new std::map<std::string, Kernel>();  // never destroyed: pool threads may outlive main
    return *r;
}

enum State { RUNNABLE, AT_BARRIER, AT_WARP, DONE };
const char* op_name(int op) {
    static const char* n[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                              "__ballot_sync", "__any_sync", "__all_sync", "__syncwarp", "warp collective (mma)"};
    return (op >= 0 && op < 9) ? n[op] : "?";
}

struct Fiber {
    void* sp = nullptr;
    char* stack_lo = nullptr;  // usable stack, above the guard page
    size_t stack_size = 0;
    State state = DONE;
    uint3 tid{};
    const char* file = "";
    int line = 0;
    int op = 0, arg = 0, width = 32;
    unsigned mask = 0;
    unsigned long long val = 0, result = 0;
    WarpCollectiveFn collective = nullptr;  // OP_COLLECTIVE: the function all lanes run once
    bool dirty = false;  // abandoned mid-kernel (ASan: shadow must be cleared)
#ifdef CUDAENC_ASAN
    void* fake = nullptr;
#endif
#ifndef CUDAENC_ASM_SWITCH
    ucontext_t ctx;
#endif
};

struct Launch {
    const Kernel* k;
    void** args;
    uint3 grid, block;
    size_t shared;
    int order;  // 0 forward, 1 reverse
    unsigned nthreads;
    unsigned long long nblocks;
    std::atomic<unsigned long long> next{0};
    std::atomic<bool> failed{false};
    std::mutex err_m;
    std::string err;
};

struct Worker {
    std::vector<Fiber> fibers;
    void* sched_sp = nullptr;
#ifndef CUDAENC_ASM_SWITCH
    ucontext_t sched_ctx;
#endif
#ifdef CUDAENC_ASAN
    void* sched_fake = nullptr;
    const void* sched_bottom = nullptr;
    size_t sched_size = 0;
#endif
    Fiber* current = nullptr;
    const Launch* L = nullptr;
    void* dyn_smem = nullptr;
};
thread_local Worker* tl_worker = nullptr;

size_t stack_bytes() {
    static size_t s = [] {
        const char* e = getenv("CUDAENC_EMU_STACK_KB");
        size_t kb = e ? strtoul(e, nullptr, 10) : 0;
        return (kb ? kb : 256) * 1024;
    }();
    return s;
}

}  // namespace
}  // namespace cudaenc_emu

using namespace cudaenc_emu;

// ---- context switch ------------------------------------------------------
extern "C" void cudaenc_fiber_entry(void* w);
#ifdef CUDAENC_ASM_SWITCH
// void cudaenc_ctx_switch(void** save_sp, void* new_sp): save callee-saved registers
// on the current stack, store its sp, load the other sp, restore and return there.
extern "C" void cudaenc_ctx_switch(void** save_sp, void* new_sp);
extern "C" void cudaenc_fiber_start();
asm(R"(
.text
.globl cudaenc_ctx_switch
.type cudaenc_ctx_switch,@function
cudaenc_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size cudaenc_ctx_switch,.-cudaenc_ctx_switch
.globl cudaenc_fiber_start
.type cudaenc_fiber_start,@function
cudaenc_fiber_start:
    movq %rbx, %rdi
    call cudaenc_fiber_entry
    ud2
.size cudaenc_fiber_start,.-cudaenc_fiber_start
)");
static void fiber_init(Worker* w, Fiber* f) {
    uintptr_t top = (uintptr_t)(f->stack_lo + f->stack_size) & ~(uintptr_t)15;
    void** sp = (void**)(top - 72);
    for (int i = 0; i < 6; i++) sp[i] = nullptr;  // r15 r14 r13 r12 rbx rbp
    sp[4] = (void*)w;                              // rbx: argument of cudaenc_fiber_entry
    sp[6] = (void*)&cudaenc_fiber_start;           // return address
    f->sp = sp;
}
static inline void to_fiber(Worker* w, Fiber* f) { cudaenc_ctx_switch(&w->sched_sp, f->sp); }
static inline void to_sched(Worker* w, Fiber* f) { cudaenc_ctx_switch(&f->sp, w->sched_sp); }
#else
static void ucontext_entry() { cudaenc_fiber_entry(cudaenc_emu::tl_worker); }
static void fiber_init(Worker* w, Fiber* f) {
    (void)w;
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->stack_lo;
    f->ctx.uc_stack.ss_size = f->stack_size;
    f->ctx.uc_link = nullptr;
    makecontext(&f->ctx, ucontext_entry, 0);
}
static inline void to_fiber(Worker* w, Fiber* f) { swapcontext(&w->sched_ctx, &f->ctx); }
static inline void to_sched(Worker* w, Fiber* f) { swapcontext(&f->ctx, &w->sched_ctx); }
#endif

// Scheduler -> fiber, with ASan's fiber annotations around the switch.
static void resume(Worker* w, Fiber* f) {
    w->current = f;
    threadIdx = f->tid;
#ifdef CUDAENC_ASAN
    __sanitizer_start_switch_fiber(&w->sched_fake, f->stack_lo, f->stack_size);
#endif
    to_fiber(w, f);
#ifdef CUDAENC_ASAN
    __sanitizer_finish_switch_fiber(w->sched_fake, nullptr, nullptr);
#endif
    w->current = nullptr;
}

// Fiber -> scheduler. `exiting`: the fiber never runs again.
static void yield(Worker* w, Fiber* f, bool exiting) {
#ifdef CUDAENC_ASAN
    __sanitizer_start_switch_fiber(exiting ? nullptr : &f->fake, w->sched_bottom, w->sched_size);
#else
    (void)exiting;
#endif
    to_sched(w, f);
#ifdef CUDAENC_ASAN
    __sanitizer_finish_switch_fiber(f->fake, &w->sched_bottom, &w->sched_size);
#endif
}

extern "C" void cudaenc_fiber_entry(void* wp) {
    Worker* w = (Worker*)wp;
#ifdef CUDAENC_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &w->sched_bottom, &w->sched_size);
#endif
    Fiber* f = w->current;
    w->L->k->tramp(w->L->k->fn, w->L->args);
    f->state = DONE;
    yield(w, f, true);
    abort();  // a finished fiber is never resumed
}

// ---- calls from kernel code ---------------------------------------------
static Worker* current_worker(const char* what) {
    Worker* w = tl_worker;
    if (!w || !w->current) {
        fprintf(stderr, "cudaenc emu: %s called outside a kernel\n", what);
        abort();
    }
    return w;
}

void cudaenc_emu::syncthreads(const char* file, int line) {
    Worker* w = current_worker("__syncthreads");
    Fiber* f = w->current;
    f->state = AT_BARRIER;
    f->file = file;
    f->line = line;
    yield(w, f, false);
}

unsigned long long cudaenc_emu::warp_op(int op, unsigned mask, unsigned long long v, int arg, int width,
                                        const char* file, int line) {
    Worker* w = current_worker(op_name(op));
    Fiber* f = w->current;
    f->state = AT_WARP;
    f->op = op;
    f->mask = mask;
    f->val = v;
    f->arg = arg;
    f->width = width;
    f->file = file;
    f->line = line;
    yield(w, f, false);
    return f->result;
}

void cudaenc_emu::warp_collective(void* lane_data, WarpCollectiveFn fn, const char* file, int line) {
    Worker* w = current_worker(op_name(OP_COLLECTIVE));
    Fiber* f = w->current;
    f->state = AT_WARP;
    f->op = OP_COLLECTIVE;
    f->mask = 0xffffffffu;
    f->val = (unsigned long long)(uintptr_t)lane_data;
    f->collective = fn;
    f->arg = 0;
    f->width = 32;
    f->file = file;
    f->line = line;
    yield(w, f, false);
}

void* cudaenc_emu::dynamic_shared() { return current_worker("dynamic shared memory")->dyn_smem; }

void cudaenc_emu::register_kernel(const char* name, void (*fn)(), Trampoline t, int nargs,
                                  const unsigned* sizes, const char* kinds) {
    Kernel& k = registry()[name];
    k.name = name;
    k.fn = fn;
    k.tramp = t;
    k.sizes.assign(sizes, sizes + nargs);
    k.kinds = kinds;
    k.registrations++;
}

// ---- one block -----------------------------------------------------------
namespace {
std::string fmt(const char* f, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof buf, f, ap);
    va_end(ap);
    return buf;
}
std::string where(const Fiber& f) {
    return fmt("thread (%u,%u,%u) at %s:%d", f.tid.x, f.tid.y, f.tid.z, f.file, f.line);
}

void ensure_fibers(Worker* w, unsigned n) {
    while (w->fibers.size() < n) {
        w->fibers.emplace_back();
        Fiber& f = w->fibers.back();
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t sz = stack_bytes();
        void* m = mmap(nullptr, sz + page, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (m == MAP_FAILED) {
            fprintf(stderr, "cudaenc emu: cannot map a fiber stack\n");
            abort();
        }
        mprotect(m, page, PROT_NONE);  // guard page below the stack
        f.stack_lo = (char*)m + page;
        f.stack_size = sz;
    }
}

// Try to complete the warp op that fiber `a` (of warp `warp`) waits in.
// Returns an error message, or "" (completed, or still waiting for lanes).
std::string resolve_warp(Worker* w, unsigned n, unsigned idx) {
    Fiber* fs = w->fibers.data();
    Fiber& a = fs[idx];
    unsigned base = idx / 32 * 32, lane = idx % 32;
    unsigned nlanes = std::min(32u, n - base);
    unsigned mask = a.mask;
    if (!(mask >> lane & 1))
        return fmt("%s: mask 0x%08x does not name the calling lane %u (%s)", op_name(a.op), mask, lane, where(a).c_str());
    for (unsigned l = 0; l < 32; l++) {
        if (!(mask >> l & 1)) continue;
        if (l >= nlanes)
            return fmt("shuffle deadlock: %s with mask 0x%08x names lane %u, which does not exist (block of %u threads) (%s)",
                       op_name(a.op), mask, l, n, where(a).c_str());
        Fiber& g = fs[base + l];
        if (g.state == DONE)
            return fmt("shuffle deadlock: %s with mask 0x%08x waits for lane %u, which has exited (%s)",
                       op_name(a.op), mask, l, where(a).c_str());
        if (g.state != AT_WARP) return "";  // not there yet
    }
    for (unsigned l = 0; l < 32; l++) {
        if (!(mask >> l & 1)) continue;
        Fiber& g = fs[base + l];
        if (g.op != a.op || g.mask != mask || (a.op == OP_COLLECTIVE && g.collective != a.collective))
            return fmt("warp divergence: lane %u is in %s mask 0x%08x (%s) while lane %u is in %s mask 0x%08x (%s)",
                       lane, op_name(a.op), mask, where(a).c_str(), l, op_name(g.op), g.mask, where(g).c_str());
    }
    int width = a.width;
    if (width < 1 || width > 32 || (width & (width - 1)))
        return fmt("%s: width %d is not a power of two <= 32 (%s)", op_name(a.op), width, where(a).c_str());
    if (a.op == OP_COLLECTIVE) {  // all 32 lanes are here (full mask): run it once for the warp
        void* lanes[32];
        for (unsigned l = 0; l < 32; l++) lanes[l] = (void*)(uintptr_t)fs[base + l].val;
        a.collective(lanes);
        for (unsigned l = 0; l < 32; l++) {
            fs[base + l].result = 0;
            fs[base + l].state = RUNNABLE;
        }
        return "";
    }
    unsigned long long ballot = 0;
    for (unsigned l = 0; l < 32; l++)
        if ((mask >> l & 1) && fs[base + l].val) ballot |= 1ull << l;
    for (unsigned l = 0; l < 32; l++) {
        if (!(mask >> l & 1)) continue;
        Fiber& g = fs[base + l];
        int seg = (int)l / width * width, src = (int)l;
        switch (a.op) {
            case OP_SHFL: src = seg + ((g.arg % width) + width) % width; break;
            case OP_SHFL_UP: src = ((int)l - seg) >= g.arg ? (int)l - g.arg : (int)l; break;
            case OP_SHFL_DOWN: src = ((int)l - seg) + g.arg < width ? (int)l + g.arg : (int)l; break;
            case OP_SHFL_XOR: src = (int)l ^ g.arg; if (src < 0 || src / width > (int)l / width) src = (int)l; break;
            default: break;
        }
        if (a.op <= OP_SHFL_XOR) {
            // reading a lane outside the mask is undefined in CUDA: poison (NaN as float)
            g.result = (src >= 0 && src < 32 && (mask >> src & 1)) ? fs[base + src].val : ~0ull;
        } else if (a.op == OP_BALLOT) {
            g.result = ballot;
        } else if (a.op == OP_ANY) {
            g.result = ballot != 0;
        } else if (a.op == OP_ALL) {
            g.result = ballot == (unsigned long long)mask;
        } else {
            g.result = 0;
        }
    }
    for (unsigned l = 0; l < 32; l++)
        if (mask >> l & 1) fs[base + l].state = RUNNABLE;
    return "";
}

std::string run_block(Worker* w, const Launch& L, uint3 bidx) {
    const unsigned n = L.nthreads;
    ensure_fibers(w, n);
    Fiber* fs = w->fibers.data();
    blockIdx = bidx;
    blockDim = L.block;
    gridDim = L.grid;
    w->L = &L;
    void* smem = malloc(L.shared ? L.shared : 1);  // exactly the launched size (ASan sees overruns)
    memset(smem, 0xFF, L.shared);                  // poison: unwritten floats read as NaN
    w->dyn_smem = smem;
    for (unsigned i = 0; i < n; i++) {
        Fiber& f = fs[i];
#ifdef CUDAENC_ASAN
        if (f.dirty) __asan_unpoison_memory_region(f.stack_lo, f.stack_size);
        f.fake = nullptr;
#endif
        f.dirty = false;
        f.state = RUNNABLE;
        f.tid = uint3{i % L.block.x, i / L.block.x % L.block.y, i / (L.block.x * L.block.y)};
        fiber_init(w, &f);
    }
    std::string err;
    for (;;) {
        bool ran = false;
        for (unsigned k = 0; k < n && err.empty(); k++) {
            unsigned i = L.order ? n - 1 - k : k;
            if (fs[i].state != RUNNABLE) continue;
            ran = true;
            resume(w, &fs[i]);
            if (fs[i].state != AT_WARP) continue;
            err = resolve_warp(w, n, i);
            if (err.empty() && fs[i].state == RUNNABLE) {
                // the warp op completed: this warp runs on at once, ahead of the other warps,
                // up to its next barrier (a legal schedule, and the one that exposes a missing
                // __syncthreads between a warp's shared-memory reads and another's writes)
                unsigned first = L.order ? std::min(n - 1, i / 32 * 32 + 31) : i / 32 * 32;
                unsigned kf = L.order ? n - 1 - first : first;
                k = kf - 1;  // the loop's k++ makes it kf (unsigned wrap-around at kf == 0 is fine)
            }
        }
        if (!err.empty() || ran) {
            if (!err.empty()) break;
            continue;
        }
        // nothing runnable: release a barrier, finish, or report the deadlock
        int live = 0, at_bar = 0;
        Fiber *first_bar = nullptr, *other_bar = nullptr, *first_warp = nullptr;
        for (unsigned i = 0; i < n; i++) {
            Fiber& f = fs[i];
            if (f.state == DONE) continue;
            live++;
            if (f.state == AT_BARRIER) {
                at_bar++;
                if (!first_bar) first_bar = &f;
                else if (!other_bar && (f.line != first_bar->line || strcmp(f.file, first_bar->file) != 0)) other_bar = &f;
            } else if (f.state == AT_WARP && !first_warp) {
                first_warp = &f;
            }
        }
        if (live == 0) break;
        if (first_warp) {
            Fiber& f = *first_warp;
            err = fmt("deadlock: %s with mask 0x%08x never completes (%s)", op_name(f.op), f.mask, where(f).c_str());
            if (first_bar) err += "; other threads wait in __syncthreads() at " + where(*first_bar);
            break;
        }
        if (other_bar) {
            err = fmt("barrier divergence: __syncthreads() reached at different places: %s and %s",
                      where(*first_bar).c_str(), where(*other_bar).c_str());
            break;
        }
        (void)at_bar;
        for (unsigned i = 0; i < n; i++)
            if (fs[i].state == AT_BARRIER) fs[i].state = RUNNABLE;
    }
    if (!err.empty())
        for (unsigned i = 0; i < n; i++)
            if (fs[i].state != DONE) fs[i].dirty = true;
    free(smem);
    w->dyn_smem = nullptr;
    w->L = nullptr;
    return err;
}

// ---- persistent worker pool ---------------------------------------------
struct Pool {
    std::mutex launch_m;  // one launch at a time, like one CUDA stream
    std::mutex m;
    std::condition_variable cv_work, cv_done;
    Launch* job = nullptr;
    unsigned long long gen = 0;
    int active = 0;
    int nthreads = 0;
};

void work(Launch& L, Worker* w) {
    for (;;) {
        unsigned long long b = L.next.fetch_add(1);
        if (b >= L.nblocks || L.failed.load()) return;
        uint3 bidx{(unsigned)(b % L.grid.x), (unsigned)(b / L.grid.x % L.grid.y),
                   (unsigned)(b / ((unsigned long long)L.grid.x * L.grid.y))};
        std::string e = run_block(w, L, bidx);
        if (!e.empty()) {
            std::lock_guard<std::mutex> g(L.err_m);
            if (!L.failed.exchange(true))
                L.err = fmt("block (%u,%u,%u): ", bidx.x, bidx.y, bidx.z) + e;
        }
    }
}

Pool& pool() {
    static Pool* p = [] {
        auto* p = new Pool();  // never destroyed
        const char* e = getenv("CUDAENC_EMU_THREADS");
        int n = e ? atoi(e) : (int)std::thread::hardware_concurrency();
        p->nthreads = std::max(1, std::min(n, 64));
        for (int i = 0; i < p->nthreads; i++) {
            std::thread([p] {
                tl_worker = new Worker();
                unsigned long long seen = 0;
                for (;;) {
                    Launch* L;
                    {
                        std::unique_lock<std::mutex> g(p->m);
                        p->cv_work.wait(g, [&] { return p->gen != seen; });
                        seen = p->gen;
                        L = p->job;
                    }
                    work(*L, tl_worker);
                    std::lock_guard<std::mutex> g(p->m);
                    if (--p->active == 0) p->cv_done.notify_all();
                }
            }).detach();
        }
        return p;
    }();
    return *p;
}

void set_err(char* err, size_t len, const std::string& s) {
    if (err && len) snprintf(err, len, "%s", s.c_str());
}
}  // namespace

// ---- C ABI ---------------------------------------------------------------
// Launch `name` like cuLaunchKernel. args[i] points at the value of parameter i,
// arg_sizes[i] is its size in bytes, arg_kinds[i] 'p' pointer, 'f' float, 'i' integer.
// order: 0 forward, 1 reverse fiber order. Returns 0, or 1 with a message in err.
extern "C" int cudaenc_emu_launch(const char* name, const unsigned grid[3], const unsigned block[3],
                                  size_t shared_bytes, void** args, size_t nargs, const size_t* arg_sizes,
                                  const char* arg_kinds, int order, char* err, size_t err_len) {
    auto& reg = registry();
    auto it = reg.find(name);
    if (it == reg.end()) {
        set_err(err, err_len, fmt("kernel '%s': no such kernel in the emulator (%zu registered; missing CUDAENC_REGISTER?)", name, reg.size()));
        return 1;
    }
    const Kernel& k = it->second;
    if (k.registrations > 1) {
        set_err(err, err_len, fmt("kernel '%s': registered %d times (kernel names must be unique across kernels/*.cu)", name, k.registrations));
        return 1;
    }
    if (nargs != k.sizes.size()) {
        set_err(err, err_len, fmt("kernel '%s': launched with %zu arguments, it takes %zu", name, nargs, k.sizes.size()));
        return 1;
    }
    for (size_t i = 0; i < nargs; i++) {
        if (arg_sizes[i] != k.sizes[i] || (arg_kinds && arg_kinds[i] != k.kinds[i])) {
            set_err(err, err_len, fmt("kernel '%s': argument %zu is %zu bytes of kind '%c', the parameter is %u bytes of kind '%c' (p pointer, f float, i integer)",
                                      name, i, arg_sizes[i], arg_kinds ? arg_kinds[i] : '?', k.sizes[i], k.kinds[i]));
            return 1;
        }
    }
    unsigned long long nthreads = (unsigned long long)block[0] * block[1] * block[2];
    if (nthreads == 0 || nthreads > 1024 || block[2] > 64) {
        set_err(err, err_len, fmt("kernel '%s': invalid block (%u,%u,%u): 1 to 1024 threads, z <= 64", name, block[0], block[1], block[2]));
        return 1;
    }
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[1] > 65535 || grid[2] > 65535) {
        set_err(err, err_len, fmt("kernel '%s': invalid grid (%u,%u,%u)", name, grid[0], grid[1], grid[2]));
        return 1;
    }
    if (shared_bytes > 227 * 1024) {
        set_err(err, err_len, fmt("kernel '%s': %zu bytes of dynamic shared memory exceed 227 KiB", name, shared_bytes));
        return 1;
    }
    Pool& p = pool();
    std::lock_guard<std::mutex> serial(p.launch_m);
    Launch L;
    L.k = &k;
    L.args = args;
    L.grid = uint3{grid[0], grid[1], grid[2]};
    L.block = uint3{block[0], block[1], block[2]};
    L.shared = shared_bytes;
    L.order = order;
    L.nthreads = (unsigned)nthreads;
    L.nblocks = (unsigned long long)grid[0] * grid[1] * grid[2];
    {
        std::unique_lock<std::mutex> g(p.m);
        p.job = &L;
        p.active = p.nthreads;
        p.gen++;
        p.cv_work.notify_all();
        p.cv_done.wait(g, [&] { return p.active == 0; });
        p.job = nullptr;
    }
    if (L.failed.load()) {
        set_err(err, err_len, fmt("kernel '%s': ", name) + L.err);
        return 1;
    }
    return 0;
}

extern "C" size_t cudaenc_emu_kernel_count() { return registry().size(); }

// Name of the i-th registered kernel (sorted), or null.
extern "C" const char* cudaenc_emu_kernel_name(size_t i) {
    auto& r = registry();
    if (i >= r.size()) return nullptr;
    auto it = r.begin();
    std::advance(it, i);
    return it->first.c_str();
}

extern "C" int cudaenc_emu_worker_threads() { return pool().nthreads; }

extern "C" const char* cudaenc_emu_flavor() {
#if defined(CUDAENC_ASM_SWITCH)
    const char* sw = "x86-64 asm context switch";
#else
    const char* sw = "ucontext";
#endif
#ifdef CUDAENC_ASAN
    static std::string s = std::string(sw) + ", AddressSanitizer";
    return s.c_str();
#else
    return sw;
#endif
}
