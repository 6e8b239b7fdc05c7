#!/bin/sh
# rig.l2=kaslr: where the kernel runs. _text is the kernel's first address: 0xffffffff81000000 (its
# link address) unless it was placed at random (KASLR). grep -m1 stops early in /proc/kallsyms.
text=$(grep -m1 ' _text$' /proc/kallsyms | cut -d' ' -f1)
nokaslr=0
grep -qw nokaslr /proc/cmdline && nokaslr=1
echo "L2-KASLR: text=${text:-none} nokaslr=$nokaslr"
