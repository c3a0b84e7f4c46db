"""The accuracy-tolerance search: the space of candidate configs, strategies (ask/tell), the trial runner and
store, the tolerance verdict, the search report, and the search run (`quantkit tune`)."""
