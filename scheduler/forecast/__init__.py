"""Demand forecasting: quantile forecasts of request rate over the capacity lead time."""
