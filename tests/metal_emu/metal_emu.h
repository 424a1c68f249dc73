// Emulation of the Metal Shading Language subset the GGUF kernels use, so that a kernel body
// (mlxquant/mlx/kernels/*.metal) compiles as C++20 and runs on a CPU.
//
// - Types: uint/ushort/uchar/uint8_t, half (_Float16), uint3; in namespace metal (the kernels
//   qualify metal_stdlib calls): as_type<T> (bit cast), popcount, simd_*, threadgroup_barrier.
// - Address spaces: device / constant / thread are empty; `threadgroup` becomes `static`, which
//   shares a variable among the threads of one threadgroup because threadgroups run one at a time.
// - Dispatch (emu::launch) is dispatchThreads as MLX issues it: threadgroups of `tg` threads
//   (clamped to the grid) cover `grid`; threads outside the grid are not launched (the last
//   threadgroup of a dimension may be partial).
//   Every thread of a threadgroup is a std::thread; a simdgroup is 32 consecutive threads of the
//   threadgroup's linear index (x fastest), lane = linear index % 32.
// - Lock-step: simd_sum / simd_max / simd_shuffle_down put each lane's value in a slot and meet
//   at a std::barrier of the simdgroup's launched lanes, read, and meet again; only lanes that
//   reached the same call contribute. threadgroup_barrier is a std::barrier of the threadgroup.
//   A thread that returns drops out of both barriers (arrive_and_drop).
#pragma once

#include <barrier>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

struct uint3 {
    uint32_t x, y, z;
};

namespace emu {

constexpr int SIMD = 32;

struct SimdGroup {
    explicit SimdGroup(int n) : bar(n) {}
    std::barrier<> bar;
    double slot[SIMD] = {};
    bool wrote[SIMD] = {};
};

struct ThreadGroup {
    explicit ThreadGroup(int n) : bar(n) {}
    std::barrier<> bar;
};

struct Lane {
    SimdGroup* sg = nullptr;
    ThreadGroup* tg = nullptr;
    int lane = 0;
};

inline thread_local Lane cur;

struct Pos {
    uint3 grid;   // thread_position_in_grid
    uint3 local;  // thread_position_in_threadgroup
    uint3 group;  // threadgroup_position_in_grid
};

// Run fn(pos) for every thread of the grid, one threadgroup at a time. As MLX's custom kernels
// dispatch, the threadgroup is first clamped to the grid in each dimension.
inline void launch(uint3 grid, uint3 tg_in, const std::function<void(const Pos&)>& fn) {
    auto lo = [](uint32_t a, uint32_t b) { return a < b ? a : b; };
    const uint3 tg{lo(tg_in.x, grid.x), lo(tg_in.y, grid.y), lo(tg_in.z, grid.z)};
    auto ceil_div = [](uint32_t a, uint32_t b) { return (a + b - 1) / b; };
    const uint3 groups{ceil_div(grid.x, tg.x), ceil_div(grid.y, tg.y), ceil_div(grid.z, tg.z)};
    for (uint32_t gz = 0; gz < groups.z; ++gz)
    for (uint32_t gy = 0; gy < groups.y; ++gy)
    for (uint32_t gx = 0; gx < groups.x; ++gx) {
        std::vector<Pos> threads;
        std::vector<int> linear;
        for (uint32_t lz = 0; lz < tg.z; ++lz)
        for (uint32_t ly = 0; ly < tg.y; ++ly)
        for (uint32_t lx = 0; lx < tg.x; ++lx) {
            const uint3 g{gx * tg.x + lx, gy * tg.y + ly, gz * tg.z + lz};
            if (g.x >= grid.x || g.y >= grid.y || g.z >= grid.z) continue;
            threads.push_back(Pos{g, uint3{lx, ly, lz}, uint3{gx, gy, gz}});
            linear.push_back(int(lx + tg.x * (ly + tg.y * lz)));
        }
        const int per_tg = int(tg.x * tg.y * tg.z);
        std::vector<int> count((per_tg + SIMD - 1) / SIMD, 0);
        for (int l : linear) count[l / SIMD]++;
        std::vector<std::unique_ptr<SimdGroup>> sgs;
        for (int c : count) sgs.push_back(std::make_unique<SimdGroup>(c > 0 ? c : 1));
        ThreadGroup group(int(threads.size()));
        std::vector<std::thread> running;
        for (size_t i = 0; i < threads.size(); ++i) {
            running.emplace_back([&, i] {
                cur = Lane{sgs[linear[i] / SIMD].get(), &group, linear[i] % SIMD};
                fn(threads[i]);
                cur.sg->bar.arrive_and_drop();
                cur.tg->bar.arrive_and_drop();
            });
        }
        for (auto& t : running) t.join();
    }
}

// One lock-step exchange: every lane of the simdgroup that reaches it publishes v, then
// read(slots, wrote) runs on each lane while all values are visible.
template <class T, class F>
T exchange(T v, F read) {
    SimdGroup& sg = *cur.sg;
    sg.slot[cur.lane] = double(v);
    sg.wrote[cur.lane] = true;
    sg.bar.arrive_and_wait();
    T r = read(sg);
    sg.bar.arrive_and_wait();
    sg.wrote[cur.lane] = false;
    return r;
}

}  // namespace emu

using uint = uint32_t;
using ushort = uint16_t;
using uchar = uint8_t;
using half = _Float16;

// metal_stdlib functions (the kernels spell them metal::...)
namespace metal {

template <class T>
T simd_sum(T v) {
    return emu::exchange(v, [](emu::SimdGroup& sg) {
        T s = T(0);
        for (int i = 0; i < emu::SIMD; ++i)
            if (sg.wrote[i]) s += T(sg.slot[i]);
        return s;
    });
}

template <class T>
T simd_max(T v) {
    return emu::exchange(v, [v](emu::SimdGroup& sg) {
        T m = v;
        for (int i = 0; i < emu::SIMD; ++i)
            if (sg.wrote[i] && T(sg.slot[i]) > m) m = T(sg.slot[i]);
        return m;
    });
}

template <class T>
T simd_shuffle_down(T v, uint32_t delta) {
    const int src = emu::cur.lane + int(delta);
    return emu::exchange(v, [v, src](emu::SimdGroup& sg) {
        return (src < emu::SIMD && sg.wrote[src]) ? T(sg.slot[src]) : v;
    });
}

enum class mem_flags { mem_none, mem_device, mem_threadgroup };

inline void threadgroup_barrier(mem_flags) { emu::cur.tg->bar.arrive_and_wait(); }


template <class T, class U>
inline T as_type(U u) {
    static_assert(sizeof(T) == sizeof(U), "as_type: sizes differ");
    T t;
    std::memcpy(&t, &u, sizeof(T));
    return t;
}

inline uint popcount(uint v) { return uint(__builtin_popcount(v)); }

}  // namespace metal

// Metal address-space qualifiers (last: the runtime above uses std::thread)
#define device
#define constant
#define thread
#define threadgroup static
