// Stand-in for Gloo's algorithm.h (see README.md): nothing of it is used.
#pragma once
