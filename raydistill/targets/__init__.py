"""Teacher targets, computed once per search and memory-mapped by every trial: the on-disk
store (``store``), the teacher's pass over the corpus in shards (``teacher_pass``) and k-means
(``kmeans``).
"""
