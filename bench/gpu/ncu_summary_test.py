#!/usr/bin/env python3
"""bench/gpu/ncu_summary.py on what ncu wrote: the decode-step profile of 2026-12-08
(bench/results/gpu-2026-12-08-h100-1b-profile/profile-csv.tar.xz, ncu 2025 on an H100), and a
few rows in other time units.

    python3 bench/gpu/ncu_summary_test.py
"""
import os
import sys
import tarfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import ncu_summary  # noqa: E402

PROFILE = os.path.join(HERE, "..", "results", "gpu-2026-12-08-h100-1b-profile",
                       "profile-csv.tar.xz")
HEADER = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream",'
          '"Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit",'
          '"Metric Value"\n')


def row(kernel, unit, value, metric="gpu__time_duration.sum"):
    return (f'"0","1","b","h","{kernel}","1","7","(128, 1, 1)","(8, 1, 1)","0","9.0",'
            f'"Command line profiler metrics","{metric}","{unit}","{value}"\n')


class NcuSummaryTest(unittest.TestCase):
    def test_real_decode_profile(self):
        with tarfile.open(PROFILE) as archive:
            text = archive.extractfile("./decode2k.csv").read().decode(errors="replace")
        total, count, launches = ncu_summary.summarize(text)
        self.assertEqual(launches, 1701)
        # 8 decode steps + 4 attention-alone runs, 16 layers each.
        self.assertEqual(count["MmaAttentionKernel"], 192)
        self.assertEqual(count["CombineKernel"], 192)
        self.assertEqual(count["RmsNormKernel"], 256)  # two a layer, 8 steps
        self.assertIn("nvjet_sm90_tss_128x8_64x12_2x1_v_bz_TNT", count)
        self.assertAlmostEqual(total["MmaAttentionKernel"] / 192, 15.8, delta=0.1)
        self.assertAlmostEqual(sum(total.values()) / 1e3, 19.609, delta=0.001)

    def test_units_names_and_other_metrics(self):
        text = ("==PROF== Connected to process 1\n" + HEADER +
                row("void a::(anonymous namespace)::K<64, true>(a::P, const int *)", "usecond",
                    "1,500.5") +
                row("a::<unnamed>::K(int)", "nsecond", "500") +
                row("a::<unnamed>::K(int)", "msecond", "2") +
                row("nvjet_x", "usecond", "3", metric="dram__bytes_read.sum"))
        total, count, launches = ncu_summary.summarize(text)
        self.assertEqual(launches, 3)
        self.assertEqual(dict(count), {"K": 3})
        self.assertAlmostEqual(total["K"], 1500.5 + 0.5 + 2000.0)

    def test_unknown_unit_is_an_error(self):
        with self.assertRaises(ValueError):
            ncu_summary.summarize(HEADER + row("K", "cycle", "5"))


if __name__ == "__main__":
    unittest.main()
