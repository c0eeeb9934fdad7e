// Stand-in for Gloo's common/error.h (see README.md): nothing of it is used.
#pragma once
